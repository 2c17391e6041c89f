package filesource

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/controlfeed/controlfeed/controlevent"
)

// disableWatcher makes new indexes run without change notification, to test
// the fallback on Linux. Set only by tests, before opening.
var disableWatcher = false

// record is one parsed ".json" file.
type record struct {
	name  string
	ev    controlevent.Event
	size  int64
	mtime int64 // UnixNano
}

// badFile is a ".json" file that could not be read or parsed.
type badFile struct {
	err   error
	size  int64
	mtime int64
}

// index is the in-memory view of a feed directory shared by Source and Sink.
// It is not safe for concurrent use; callers serialize access.
//
// With a watcher, refresh drains the watcher's queue of changed names and
// re-reads only those files; without one, it lists the directory and re-reads
// files whose size or modification time changed.
type index struct {
	dir string
	log *slog.Logger
	w   *watcher // nil: no change notification, list the directory every time

	scanned bool // an initial full scan has completed (watcher mode)

	files     map[string]*record   // good files by name
	bad       map[string]badFile   // unreadable or invalid files by name
	byCV      map[uint64][]*record // files holding each ControlVersion
	cvs       []uint64             // distinct ControlVersions, ascending
	byID      map[string][]uint64  // ControlVersions holding each EventID, one entry per file
	conflicts map[uint64]struct{}  // ControlVersions claimed by different EventIDs
}

func newIndex(dir string, log *slog.Logger) (*index, error) {
	ix := &index{
		dir:       dir,
		log:       log,
		files:     map[string]*record{},
		bad:       map[string]badFile{},
		byCV:      map[uint64][]*record{},
		byID:      map[string][]uint64{},
		conflicts: map[uint64]struct{}{},
	}
	w, err := newWatcher(dir)
	if err == nil && disableWatcher {
		w.close()
		err = errors.New("disabled by a test")
	}
	if err != nil {
		log.Info("filesource: change notification unavailable; every poll lists the directory", "dir", dir, "err", err)
	} else {
		ix.w = w
	}
	return ix, nil
}

func (ix *index) close() error {
	if ix.w != nil {
		return ix.w.close()
	}
	return nil
}

// refresh brings the index up to date with the directory. The watch is
// registered before the first full scan, so no change is missed.
func (ix *index) refresh() error {
	if ix.w == nil || !ix.scanned {
		if err := ix.fullScan(); err != nil {
			return err
		}
		if ix.w != nil {
			ix.scanned = true
		}
		return nil
	}
	names, overflow, err := ix.w.drain()
	if err != nil {
		return err
	}
	if overflow {
		ix.log.Warn("filesource: change queue overflowed; rescanning the directory", "dir", ix.dir)
		return ix.fullScan()
	}
	for _, name := range names {
		ix.update(name)
	}
	return nil
}

// fullScan lists the directory, re-reads files that are new or changed (by
// size and modification time) and forgets files that are gone.
func (ix *index) fullScan() error {
	entries, err := os.ReadDir(ix.dir)
	if err != nil {
		return fmt.Errorf("list directory: %w", err)
	}
	seen := make(map[string]struct{}, len(entries))
	for _, de := range entries {
		name := de.Name()
		if !isEventName(name) {
			continue
		}
		seen[name] = struct{}{}
		info, err := de.Info()
		if err != nil {
			ix.update(name) // gone or unreadable: update records which
			continue
		}
		size, mtime := info.Size(), info.ModTime().UnixNano()
		if r := ix.files[name]; r != nil && r.size == size && r.mtime == mtime {
			continue
		}
		if b, ok := ix.bad[name]; ok && b.size == size && b.mtime == mtime {
			continue
		}
		ix.update(name)
	}
	for name := range ix.files {
		if _, ok := seen[name]; !ok {
			ix.remove(name)
		}
	}
	for name := range ix.bad {
		if _, ok := seen[name]; !ok {
			delete(ix.bad, name)
		}
	}
	return nil
}

// isEventName reports whether a directory entry name is an event file.
func isEventName(name string) bool {
	return strings.HasSuffix(name, ".json")
}

// update re-reads one file and records the result: a good event, a bad file,
// or nothing if the file is gone.
func (ix *index) update(name string) {
	ix.remove(name)
	rec, bad, gone := readEventFile(filepath.Join(ix.dir, name), name)
	switch {
	case gone:
	case bad.err != nil:
		ix.bad[name] = bad
	default:
		ix.add(rec)
	}
}

// readEventFile reads and parses one event file.
func readEventFile(path, name string) (rec *record, bad badFile, gone bool) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, badFile{}, true
	}
	if err != nil {
		return nil, badFile{err: fmt.Errorf("file %q: %w", name, err)}, false
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, badFile{err: fmt.Errorf("file %q: %w", name, err)}, false
	}
	bad.size, bad.mtime = info.Size(), info.ModTime().UnixNano()
	if !info.Mode().IsRegular() {
		bad.err = fmt.Errorf("file %q: not a regular file (%s)", name, info.Mode().Type())
		return nil, bad, false
	}
	b, err := io.ReadAll(io.LimitReader(f, controlevent.MaxEncodedSize+1))
	if err != nil {
		bad.err = fmt.Errorf("file %q: %w", name, err)
		return nil, bad, false
	}
	ev, err := parseEvent(b)
	if err != nil {
		bad.err = fmt.Errorf("file %q: %w", name, err)
		return nil, bad, false
	}
	return &record{name: name, ev: ev, size: bad.size, mtime: bad.mtime}, badFile{}, false
}

// parseEvent decodes one event file's content and validates it as a
// published event. Errors wrap controlevent.ErrInvalid.
func parseEvent(b []byte) (controlevent.Event, error) {
	ev, err := controlevent.Decode(b)
	if err != nil {
		return controlevent.Event{}, err
	}
	if err := ev.Validate(); err != nil {
		return controlevent.Event{}, err
	}
	return ev, nil
}

func (ix *index) add(r *record) {
	ix.files[r.name] = r
	cv := r.ev.ControlVersion
	list := ix.byCV[cv]
	if len(list) == 0 {
		i, _ := slices.BinarySearch(ix.cvs, cv)
		ix.cvs = slices.Insert(ix.cvs, i, cv)
	}
	ix.byCV[cv] = append(list, r)
	ix.checkConflict(cv)
	ix.byID[r.ev.EventID] = append(ix.byID[r.ev.EventID], cv)
}

// remove forgets a file, good or bad.
func (ix *index) remove(name string) {
	delete(ix.bad, name)
	r := ix.files[name]
	if r == nil {
		return
	}
	delete(ix.files, name)
	cv := r.ev.ControlVersion
	list := slices.DeleteFunc(ix.byCV[cv], func(x *record) bool { return x == r })
	if len(list) == 0 {
		delete(ix.byCV, cv)
		delete(ix.conflicts, cv)
		if i, ok := slices.BinarySearch(ix.cvs, cv); ok {
			ix.cvs = slices.Delete(ix.cvs, i, i+1)
		}
	} else {
		ix.byCV[cv] = list
		ix.checkConflict(cv)
	}
	ids := ix.byID[r.ev.EventID]
	if i := slices.Index(ids, cv); i >= 0 {
		ids = slices.Delete(ids, i, i+1)
	}
	if len(ids) == 0 {
		delete(ix.byID, r.ev.EventID)
	} else {
		ix.byID[r.ev.EventID] = ids
	}
}

func (ix *index) checkConflict(cv uint64) {
	list := ix.byCV[cv]
	for _, r := range list[1:] {
		if r.ev.EventID != list[0].ev.EventID {
			ix.conflicts[cv] = struct{}{}
			return
		}
	}
	delete(ix.conflicts, cv)
}

// problem returns the error of the first bad file (by name) or the first
// conflicting ControlVersion, or nil when every file is a good event.
func (ix *index) problem() error {
	if len(ix.bad) > 0 {
		names := make([]string, 0, len(ix.bad))
		for n := range ix.bad {
			names = append(names, n)
		}
		slices.Sort(names)
		if len(names) > 1 {
			return fmt.Errorf("%w (and %d more bad files)", ix.bad[names[0]].err, len(names)-1)
		}
		return ix.bad[names[0]].err
	}
	if len(ix.conflicts) > 0 {
		cv := uint64(0)
		for c := range ix.conflicts {
			if cv == 0 || c < cv {
				cv = c
			}
		}
		list := slices.Clone(ix.byCV[cv])
		slices.SortFunc(list, func(a, b *record) int { return cmp.Compare(a.name, b.name) })
		a := list[0]
		for _, b := range list[1:] {
			if b.ev.EventID != a.ev.EventID {
				return fmt.Errorf("files %q and %q both hold control_version %d but with different event_ids %q and %q",
					a.name, b.name, cv, a.ev.EventID, b.ev.EventID)
			}
		}
	}
	return nil
}

// head returns the highest ControlVersion in the directory, 0 if none.
func (ix *index) head() uint64 {
	if len(ix.cvs) == 0 {
		return 0
	}
	return ix.cvs[len(ix.cvs)-1]
}

// first returns the lowest ControlVersion in the directory, 0 if none.
func (ix *index) first() uint64 {
	if len(ix.cvs) == 0 {
		return 0
	}
	return ix.cvs[0]
}

// after returns up to max events with ControlVersion > since, ascending.
func (ix *index) after(since uint64, max int) []controlevent.Event {
	i, found := slices.BinarySearch(ix.cvs, since)
	if found {
		i++
	}
	n := min(len(ix.cvs)-i, max)
	out := make([]controlevent.Event, 0, n)
	for _, cv := range ix.cvs[i : i+n] {
		out = append(out, ix.byCV[cv][0].ev)
	}
	return out
}

// lookupID returns the lowest ControlVersion recorded for eventID.
func (ix *index) lookupID(eventID string) (uint64, bool) {
	cvs := ix.byID[eventID]
	if len(cvs) == 0 {
		return 0, false
	}
	return slices.Min(cvs), true
}

// fileName is the name the Sink gives the event with ControlVersion cv.
func fileName(cv uint64) string {
	return fmt.Sprintf("%020d.json", cv)
}
