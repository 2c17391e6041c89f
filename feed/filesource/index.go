package filesource

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
)

// disableWatcher makes new indexes run without change notification, to test
// the fallback on Linux. Set only by tests, before opening.
var disableWatcher = false

// fileStat identifies one version of a file, to tell in a full scan whether
// it changed since it was read. The change time covers chmod and link(2).
type fileStat struct {
	ino   uint64
	size  int64
	mtime int64
	ctime int64
}

func statOf(info fs.FileInfo) fileStat {
	st := fileStat{size: info.Size(), mtime: info.ModTime().UnixNano()}
	if sys, ok := info.Sys().(*syscall.Stat_t); ok {
		st.ino = uint64(sys.Ino)
		st.ctime = sys.Ctim.Nano()
	}
	return st
}

// entry is one ".json" file of the directory: a good event or a bad file.
type entry struct {
	name string
	st   fileStat
	sum  [sha256.Size]byte  // of the content; zero if it could not be read
	pos  uint64             // its position in the feed; 0 if it cannot be determined
	ev   controlevent.Event // the event, if err is nil
	err  error              // why the file is not a valid event; nil for a good one
	id   string             // of a bad file: its event_id, if readable and valid
}

// index is the in-memory view of a feed directory shared by Source, Sink and
// Prune. It is not safe for concurrent use; callers serialize access.
//
// With a watcher, refresh drains the watcher's queue of changed names and
// re-reads only those files; without one, it lists the directory and
// re-reads files whose identity, size, modification or change time changed,
// and every bad file.
type index struct {
	dir string
	log *slog.Logger
	w   *watcher // nil: no change notification, list the directory every time

	scanned bool // an initial full scan has completed

	entries  map[string]*entry   // every ".json" file known, by name
	at       map[uint64][]*entry // entries at each known position (late ones excluded)
	cvs      []uint64            // positions holding a good entry, ascending
	problems map[uint64]struct{} // positions whose entries are not one event
	unknown  map[string]*entry   // bad entries whose position cannot be determined
	late     map[string]*entry   // entries that appeared at or below horizon
	byID     map[string][]uint64 // positions of the good entries of each EventID

	marker      marker   // the prune marker, zero if none
	markerErr   error    // why the marker could not be read; blocks everything
	markerSt    fileStat // of the marker file as last read (zero: absent)
	markerKnown bool     // the marker has been read once

	// horizon is the position up to which a Source has delivered the feed:
	// the highest position it returned, or a cursor it was polled from
	// within the feed's extent. An entry that appears at or below it is a
	// late write. The Sink and Prune leave it at 0.
	horizon uint64
	// tombs holds, per delivered position, the digests of files removed
	// there, so that a file put back unchanged (a copy, a re-read) is not
	// mistaken for a late write.
	tombs map[uint64][][sha256.Size]byte
}

// newIndex returns an empty index of dir; watch asks for change notification
// (used when available).
func newIndex(dir string, log *slog.Logger, watch bool) *index {
	ix := &index{
		dir:      dir,
		log:      log,
		entries:  map[string]*entry{},
		at:       map[uint64][]*entry{},
		problems: map[uint64]struct{}{},
		unknown:  map[string]*entry{},
		late:     map[string]*entry{},
		byID:     map[string][]uint64{},
		tombs:    map[uint64][][sha256.Size]byte{},
	}
	if !watch {
		return ix
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
	return ix
}

func (ix *index) close() error {
	if ix.w != nil {
		return ix.w.close()
	}
	return nil
}

// lockFunc takes the lock a refresh holds while it captures the names that
// changed, and returns its release. Files are read after the release: a
// writer following the protocol never changes a file once it has a ".json"
// name, so every name captured under the lock is complete.
type lockFunc func(context.Context) (unlock func(), err error)

// noLock is the lockFunc of callers that already hold the exclusive lock.
func noLock(context.Context) (func(), error) { return func() {}, nil }

// refresh brings the index up to date with the directory. The watch is
// registered before the first full scan, so no change is missed.
func (ix *index) refresh(ctx context.Context, lock lockFunc) error {
	if ix.w == nil || !ix.scanned {
		if err := ix.fullScan(ctx, lock); err != nil {
			return err
		}
		ix.scanned = true
		return nil
	}
	unlock, err := lock(ctx)
	if err != nil {
		return err
	}
	names, overflow, err := ix.w.drain()
	unlock()
	if err != nil {
		return err
	}
	if overflow {
		ix.log.Warn("filesource: change queue overflowed; rescanning the directory", "dir", ix.dir)
		return ix.fullScan(ctx, lock)
	}
	slices.Sort(names)
	for _, name := range slices.Compact(names) {
		if name == markerName {
			ix.loadMarker()
			continue
		}
		ix.update(name)
	}
	return nil
}

// fullScan lists the directory under lock, then re-reads files that are new
// or changed and every bad file, forgets files that are gone, and re-reads
// the prune marker if it changed.
func (ix *index) fullScan(ctx context.Context, lock lockFunc) error {
	unlock, err := lock(ctx)
	if err != nil {
		return err
	}
	names, err := listNames(ix.dir)
	unlock()
	if err != nil {
		return fmt.Errorf("list directory: %w", err)
	}
	seen := make(map[string]struct{}, len(names))
	for _, name := range names {
		if !isEventName(name) {
			continue
		}
		seen[name] = struct{}{}
		if e := ix.entries[name]; e != nil && e.err == nil {
			info, err := os.Stat(filepath.Join(ix.dir, name))
			if err == nil && statOf(info) == e.st {
				continue
			}
		}
		ix.update(name)
	}
	for name := range ix.entries {
		if _, ok := seen[name]; !ok {
			ix.remove(name)
		}
	}
	ix.loadMarkerIfChanged()
	return nil
}

// listNames returns the names in dir (one getdents pass, no stat).
func listNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// isEventName reports whether a directory entry name is an event file.
func isEventName(name string) bool {
	return strings.HasSuffix(name, ".json")
}

// update re-reads one file and records the result: a good event, a bad file,
// or nothing if the file is gone.
func (ix *index) update(name string) {
	ix.remove(name)
	if e := readEntry(ix.dir, name); e != nil {
		ix.add(e)
	}
}

// readEntry reads and parses one event file; nil means it does not exist.
func readEntry(dir, name string) *entry {
	path := filepath.Join(dir, name)
	bad := func(st fileStat, err error) *entry {
		return &entry{name: name, st: st, pos: nameHint(name), err: fmt.Errorf("file %q: %w", name, err)}
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		if _, lerr := os.Lstat(path); lerr != nil {
			return nil // gone
		}
		return bad(fileStat{}, err) // a dangling symbolic link
	}
	if err != nil {
		return bad(fileStat{}, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return bad(fileStat{}, err)
	}
	st := statOf(info)
	if !info.Mode().IsRegular() {
		return bad(st, fmt.Errorf("not a regular file (%s)", info.Mode().Type()))
	}
	b, err := io.ReadAll(io.LimitReader(f, controlevent.MaxEncodedSize+1))
	if err != nil {
		return bad(st, err)
	}
	e := &entry{name: name, st: st, sum: sha256.Sum256(b)}
	ev, err := parseEvent(b)
	if err != nil {
		e.err = fmt.Errorf("file %q: %w", name, err)
		e.pos, e.id = badFilePosition(name, b)
		return e
	}
	e.ev, e.pos = ev, ev.ControlVersion
	return e
}

// parseEvent decodes one event file's content and validates it as a
// published event (Validate also bounds control_version by math.MaxInt64,
// the highest position a consumer can record). Errors wrap
// controlevent.ErrInvalid.
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

func (ix *index) add(e *entry) {
	ix.entries[e.name] = e
	if e.pos == 0 {
		ix.unknown[e.name] = e
		return
	}
	if ix.isLate(e) {
		ix.late[e.name] = e
		return
	}
	p := e.pos
	list := ix.at[p]
	if e.err == nil {
		if !hasGood(list) {
			i, _ := slices.BinarySearch(ix.cvs, p)
			ix.cvs = slices.Insert(ix.cvs, i, p)
		}
		ix.byID[e.ev.EventID] = append(ix.byID[e.ev.EventID], p)
	}
	ix.at[p] = append(list, e)
	ix.recheck(p)
}

// isLate reports whether e appeared at a position the Source has already
// delivered, other than as a copy of what was (or is) there.
func (ix *index) isLate(e *entry) bool {
	p := e.pos
	if !ix.scanned || p > ix.horizon || p <= ix.marker.PrunedThrough {
		return false
	}
	for _, o := range ix.at[p] {
		if o.sum == e.sum {
			return false
		}
	}
	if tombs := ix.tombs[p]; slices.Contains(tombs, e.sum) {
		if tombs = slices.DeleteFunc(tombs, func(s [sha256.Size]byte) bool { return s == e.sum }); len(tombs) == 0 {
			delete(ix.tombs, p)
		} else {
			ix.tombs[p] = tombs
		}
		return false
	}
	return true
}

// remove forgets a file, good or bad.
func (ix *index) remove(name string) {
	e := ix.entries[name]
	if e == nil {
		return
	}
	delete(ix.entries, name)
	if _, ok := ix.unknown[name]; ok {
		delete(ix.unknown, name)
		return
	}
	if _, ok := ix.late[name]; ok {
		delete(ix.late, name)
		return
	}
	p := e.pos
	list := slices.DeleteFunc(ix.at[p], func(x *entry) bool { return x == e })
	if len(list) == 0 {
		delete(ix.at, p)
	} else {
		ix.at[p] = list
	}
	if e.err == nil {
		if !hasGood(list) {
			if i, ok := slices.BinarySearch(ix.cvs, p); ok {
				ix.cvs = slices.Delete(ix.cvs, i, i+1)
			}
		}
		ids := ix.byID[e.ev.EventID]
		if i := slices.Index(ids, p); i >= 0 {
			ids = slices.Delete(ids, i, i+1)
		}
		if len(ids) == 0 {
			delete(ix.byID, e.ev.EventID)
		} else {
			ix.byID[e.ev.EventID] = ids
		}
	}
	if ix.scanned && p <= ix.horizon && p > ix.marker.PrunedThrough && !slices.Contains(ix.tombs[p], e.sum) {
		ix.tombs[p] = append(ix.tombs[p], e.sum)
	}
	ix.recheck(p)
}

func hasGood(list []*entry) bool {
	return slices.ContainsFunc(list, func(e *entry) bool { return e.err == nil })
}

// recheck records whether position p holds exactly one event: only good
// files, all with the same bytes.
func (ix *index) recheck(p uint64) {
	list := ix.at[p]
	for _, e := range list {
		if e.err != nil || e.sum != list[0].sum {
			ix.problems[p] = struct{}{}
			return
		}
	}
	delete(ix.problems, p)
}

// loadMarker re-reads the prune marker. Tombstones at pruned positions are
// dropped: those positions are behind retention now.
func (ix *index) loadMarker() {
	var st fileStat
	if info, err := os.Stat(filepath.Join(ix.dir, markerName)); err == nil {
		st = statOf(info)
	}
	m, err := readMarker(ix.dir)
	ix.markerSt, ix.markerErr, ix.markerKnown = st, err, true
	if err != nil {
		return // keep the last good marker; markerErr blocks meanwhile
	}
	ix.marker = m
	for p := range ix.tombs {
		if p <= m.PrunedThrough {
			delete(ix.tombs, p)
		}
	}
}

// loadMarkerIfChanged re-reads the prune marker unless its file is the one
// read last time.
func (ix *index) loadMarkerIfChanged() {
	var st fileStat
	if info, err := os.Stat(filepath.Join(ix.dir, markerName)); err == nil {
		st = statOf(info)
	}
	if ix.markerKnown && ix.markerErr == nil && st == ix.markerSt {
		return
	}
	ix.loadMarker()
}

// highWater returns the highest position taken in the directory: by a file,
// good or bad, or, per the prune marker, by a file since pruned. 0 if none.
func (ix *index) highWater() uint64 {
	h := max(ix.marker.HighWater, ix.marker.PrunedThrough)
	if n := len(ix.cvs); n > 0 {
		h = max(h, ix.cvs[n-1])
	}
	for p := range ix.problems {
		h = max(h, p)
	}
	for _, e := range ix.late {
		h = max(h, e.pos)
	}
	return h
}

// blocked reports whether something stops the whole feed (see blocking).
func (ix *index) blocked() bool {
	if ix.markerErr != nil || len(ix.unknown) > 0 {
		return true
	}
	for _, e := range ix.late {
		if e.pos > ix.marker.PrunedThrough {
			return true
		}
	}
	return false
}

// blocking returns the error that stops every Poll, whatever the cursor: an
// unreadable prune marker, a bad file whose position cannot be determined
// (it may belong anywhere), or a late write (a file at a position already
// delivered). Nil if there is none.
func (ix *index) blocking() error {
	if ix.markerErr != nil {
		return ix.markerErr
	}
	if len(ix.unknown) > 0 {
		e, more := firstByName(ix.unknown, nil)
		return fmt.Errorf("%w%s; no position can be read from it (a control_version between 1 and 2^63-1, or a name of digits), "+
			"so no reader can tell where in the feed it belongs: fix it or remove it", e.err, andMore(more, "bad files"))
	}
	e, more := firstByName(ix.late, func(e *entry) bool { return e.pos > ix.marker.PrunedThrough })
	if e == nil {
		return nil
	}
	what := ""
	if e.err == nil {
		what = fmt.Sprintf(" (event %q)", e.ev.EventID)
	}
	held := ""
	if list := ix.at[e.pos]; len(list) > 0 {
		held = fmt.Sprintf("; the position is held by %q", sortedByName(list)[0].name)
	}
	return fmt.Errorf("file %q%s holds control_version %d, but this Source had already delivered the feed through %d when the file appeared "+
		"(written late, or changed after it was read)%s, so a consumer past %d never applies it%s; "+
		"remove it, and append its event again through a Sink so that it gets a new position: %w",
		e.name, what, e.pos, ix.horizon, held, e.pos, andMore(more, "late files"), ErrLateWrite)
}

// firstByName returns the entry of m with the lowest name among those keep
// accepts (all if keep is nil), and how many others it accepts.
func firstByName(m map[string]*entry, keep func(*entry) bool) (first *entry, more int) {
	for _, e := range m {
		if keep != nil && !keep(e) {
			continue
		}
		if first == nil || e.name < first.name {
			if first != nil {
				more++
			}
			first = e
		} else {
			more++
		}
	}
	return first, more
}

func andMore(n int, what string) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" (and %d more %s)", n, what)
}

func sortedByName(list []*entry) []*entry {
	out := slices.Clone(list)
	slices.SortFunc(out, func(a, b *entry) int { return cmp.Compare(a.name, b.name) })
	return out
}

// nextProblem returns the lowest position above since whose files are not
// one valid event, or 0 if there is none.
func (ix *index) nextProblem(since uint64) uint64 {
	var p uint64
	for q := range ix.problems {
		if q > since && (p == 0 || q < p) {
			p = q
		}
	}
	return p
}

// problemError describes the files at problem position p: an
// *feed.InvalidEventError when only bad files claim it (an event a consumer
// can halt at and skip), a conflict (ErrConflict) when it also holds a good
// event or holds events that differ.
func (ix *index) problemError(p uint64) error {
	var goods, bads []*entry
	for _, e := range sortedByName(ix.at[p]) {
		if e.err == nil {
			goods = append(goods, e)
		} else {
			bads = append(bads, e)
		}
	}
	if len(goods) == 0 {
		b := bads[0]
		id := b.id
		for _, o := range bads[1:] {
			if o.id != id {
				id = ""
			}
		}
		if id == "" {
			id = feed.UnreadableEventID(p)
		}
		err := b.err
		if len(bads) > 1 {
			err = fmt.Errorf("%w (and %d more bad files at this position)", err, len(bads)-1)
		}
		return &feed.InvalidEventError{Source: Name, ControlVersion: p, EventID: id, Err: err}
	}
	a := goods[0]
	if len(bads) > 0 {
		return fmt.Errorf("file %q claims control_version %d, which file %q holds, but is not a valid event (%v); fix or remove %q: %w",
			bads[0].name, p, a.name, bads[0].err, bads[0].name, ErrConflict)
	}
	for _, b := range goods[1:] {
		if b.sum == a.sum {
			continue
		}
		if b.ev.EventID != a.ev.EventID {
			return fmt.Errorf("files %q and %q both hold control_version %d but with different event_ids %q and %q; remove the wrong one: %w",
				a.name, b.name, p, a.ev.EventID, b.ev.EventID, ErrConflict)
		}
		return fmt.Errorf("files %q and %q both hold event %q at control_version %d but their contents differ, so readers would apply "+
			"whichever they read first; remove the wrong one: %w", a.name, b.name, a.ev.EventID, p, ErrConflict)
	}
	return nil // unreachable: p is a problem position
}

// firstAvailable returns the lowest position above the pruned ones that the
// directory holds, or the one right after them if it holds none.
func (ix *index) firstAvailable() uint64 {
	pt := ix.marker.PrunedThrough
	var first uint64
	i, found := slices.BinarySearch(ix.cvs, pt)
	if found {
		i++
	}
	if i < len(ix.cvs) {
		first = ix.cvs[i]
	}
	if q := ix.nextProblem(pt); q != 0 && (first == 0 || q < first) {
		first = q
	}
	if first == 0 {
		first = pt + 1
	}
	return first
}

// poll returns up to batch events above since, ascending, stopping before the
// first problem position; if the first position above since is a problem,
// it returns that problem's error instead. Errors that stop the whole feed
// and retention come first. It moves the delivery horizon.
func (ix *index) poll(since uint64, batch int) ([]controlevent.Event, error) {
	if since < ix.horizon && len(ix.late) > 0 {
		ix.rewind(since)
	}
	ix.horizon = max(ix.horizon, min(since, ix.highWater()))
	if err := ix.blocking(); err != nil {
		return nil, err
	}
	if pt := ix.marker.PrunedThrough; since < pt {
		return nil, &feed.CursorBehindError{Source: Name, Cursor: since, FirstAvailable: ix.firstAvailable()}
	}
	p := ix.nextProblem(since)
	evs := ix.after(since, batch, p)
	if n := len(evs); n > 0 {
		ix.horizon = max(ix.horizon, evs[n-1].ControlVersion)
		return evs, nil
	}
	if p != 0 {
		return nil, ix.problemError(p)
	}
	return evs, nil
}

// rewind is a consumer's Poll from since, below the horizon: it has not
// passed the positions above since (it halted at a later event and polls
// again from its cursor, or a batch it was given did not commit), so a late
// file above since is not missed: it is read in order from now on, as a
// Source started now would read it (an operator putting back, at its
// position, a file the consumer halted after). Late files at or below since
// stay late. The horizon comes down to since; the events above it are
// delivered again, and whatever appears at or below it later is late.
func (ix *index) rewind(since uint64) {
	ix.horizon = since
	var back []*entry
	for name, e := range ix.late {
		if e.pos > since {
			delete(ix.late, name)
			back = append(back, e)
		}
	}
	slices.SortFunc(back, func(a, b *entry) int { return strings.Compare(a.name, b.name) })
	for _, e := range back {
		ix.add(e)
	}
}

// ready reports whether poll(since) would return events or an error.
func (ix *index) ready(since uint64) bool {
	if ix.blocked() || since < ix.marker.PrunedThrough || ix.nextProblem(since) != 0 {
		return true
	}
	return len(ix.cvs) > 0 && ix.cvs[len(ix.cvs)-1] > since
}

// after returns up to batch events with since < ControlVersion < limit (no
// upper bound if limit is 0), ascending.
func (ix *index) after(since uint64, batch int, limit uint64) []controlevent.Event {
	i, found := slices.BinarySearch(ix.cvs, since)
	if found {
		i++
	}
	out := make([]controlevent.Event, 0, min(len(ix.cvs)-i, batch))
	for _, cv := range ix.cvs[i:] {
		if len(out) == batch || limit != 0 && cv >= limit {
			break
		}
		out = append(out, ix.at[cv][0].ev) // not a problem position: every entry is this good event
	}
	return out
}

// sinkProblem returns why a writer cannot choose the next position safely:
// an unreadable prune marker (its high water is unknown) or a bad file whose
// position cannot be determined (it may claim any). Nil otherwise.
func (ix *index) sinkProblem() error {
	if ix.markerErr != nil {
		return ix.markerErr
	}
	if len(ix.unknown) > 0 {
		e, more := firstByName(ix.unknown, nil)
		return fmt.Errorf("%w%s; no position can be read from it, so it may claim any: fix it or remove it", e.err, andMore(more, "bad files"))
	}
	return nil
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
