package filesource

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
)

const (
	lockName   = ".lock"
	tempPrefix = ".tmp-"
)

// Sink appends events to a feed directory. It implements feed.Sink.
//
// A Sink is safe for concurrent use by multiple goroutines, and any number of
// Sinks, in this process or others, may append to the same directory at once:
// appends are serialized by a mutex and by an exclusive flock on the
// directory's lock file. It holds the lock file, the directory and an inotify
// descriptor open until Close.
type Sink struct {
	dir         string
	log         *slog.Logger
	lockTimeout time.Duration

	mu     sync.Mutex
	ix     *index
	lock   *os.File
	dirF   *os.File
	closed bool
}

// NewSink opens a Sink on dir, creating the directory (mode 0755) and its
// lock file if needed. It removes temporary files left over by writers that
// crashed, under the lock. opts may be nil.
func NewSink(dir string, opts *Options) (*Sink, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	o := opts.withDefaults()
	if dir == "" {
		return nil, fmt.Errorf("filesource: open sink: %w", errEmptyDir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("filesource: open sink %q: %w", dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("filesource: open sink %q: %w", dir, err)
	}
	dirF, err := os.Open(dir)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("filesource: open sink %q: %w", dir, err)
	}
	s := &Sink{dir: dir, log: o.Logger, lockTimeout: o.LockTimeout, ix: newIndex(dir, o.Logger, true), lock: lock, dirF: dirF}
	if err := s.removeStaleTemps(); err != nil {
		s.Close()
		return nil, fmt.Errorf("filesource: open sink %q: %w", dir, err)
	}
	return s, nil
}

// removeStaleTemps deletes temporary files: under the lock, no writer is
// between creating and renaming one, so any that exists is from a crash.
func (s *Sink) removeStaleTemps() error {
	if err := lockFile(context.Background(), s.lock, lockExclusive, s.lockTimeout); err != nil {
		return fmt.Errorf("lock %s: %w", lockName, err)
	}
	defer unlockFile(s.lock)
	names, err := listNames(s.dir)
	if err != nil {
		return err
	}
	for _, name := range names {
		if !strings.HasPrefix(name, tempPrefix) {
			continue
		}
		path := filepath.Join(s.dir, name)
		if info, err := os.Lstat(path); err != nil || !info.Mode().IsRegular() {
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		s.log.Info("filesource: removed a temporary file left by a crashed writer", "dir", s.dir, "file", name)
	}
	return nil
}

// Name returns "file".
func (s *Sink) Name() string { return Name }

// Dir returns the directory the Sink writes.
func (s *Sink) Dir() string { return s.dir }

// maxWriteAttempts bounds how often Append picks a name again after finding
// it taken by a file its index did not know.
const maxWriteAttempts = 3

// Append writes e to the directory as the event with the next ControlVersion
// and returns it stamped. The next ControlVersion is one above the highest
// position ever taken in the directory: by any file, good or bad (if its
// position can be read), and by files since pruned (the prune marker's
// high_water), so a position is never given twice. If an event with the same
// EventID is already in the directory, it writes nothing and returns e
// stamped with that event's ControlVersion (the lowest, should a foreign
// writer have added it twice).
//
// e must have a non-empty EventID, ControlVersion 0 and pass
// controlevent.Event.ValidateUnpublished; otherwise, and on any failure, the
// input is returned unchanged with an error. Append refuses to choose a
// position while the directory holds a file whose position cannot be read
// or an unreadable prune marker. The file name is derived from the
// ControlVersion only ("%020d.json"; "%020d-N.json" if another file already
// has that name). If the name turns out to be taken by a file the Sink had
// not seen, it rescans the directory and chooses again. Append returns after
// the file and the directory are synced; a crash before that leaves either no
// event or a complete one, which a retry with the same EventID then finds.
// Append waits for the directory's exclusive lock while another process
// holds it, until ctx is done or Options.LockTimeout has passed (then the
// error wraps feed.ErrUnavailable).
func (s *Sink) Append(ctx context.Context, e controlevent.Event) (controlevent.Event, error) {
	id := quoteID(e.EventID)
	if err := ctx.Err(); err != nil {
		return e, fmt.Errorf("filesource: append %s: %w", id, err)
	}
	if e.EventID == "" {
		return e, fmt.Errorf("filesource: append: event_id is empty: %w", controlevent.ErrInvalid)
	}
	if e.ControlVersion != 0 {
		return e, fmt.Errorf("filesource: append %s: control_version is %d; the sink assigns it, so it must be 0: %w", id, e.ControlVersion, controlevent.ErrInvalid)
	}
	if err := e.ValidateUnpublished(); err != nil {
		return e, fmt.Errorf("filesource: append %s: %w", id, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return e, fmt.Errorf("filesource: append %s: %w", id, feed.ErrClosed)
	}
	if err := lockFile(ctx, s.lock, lockExclusive, s.lockTimeout); err != nil {
		return e, fmt.Errorf("filesource: append %s: lock %s: %w", id, filepath.Join(s.dir, lockName), err)
	}
	defer unlockFile(s.lock)

	return s.appendLocked(ctx, e, id)
}

// appendLocked is Append's work under the exclusive lock: refresh the index,
// deduplicate, choose the position and a free name, write, and rescan and
// choose again if the name turns out to be taken.
func (s *Sink) appendLocked(ctx context.Context, e controlevent.Event, id string) (controlevent.Event, error) {
	// Holding the lock, every other writer's rename is complete and its
	// change notification queued, so the refreshed index is exact.
	if err := s.ix.refresh(ctx, noLock); err != nil {
		return e, fmt.Errorf("filesource: append %s: read %q: %w", id, s.dir, err)
	}
	for attempt := 1; ; attempt++ {
		if err := s.ix.sinkProblem(); err != nil {
			return e, fmt.Errorf("filesource: append %s: cannot choose a control_version in %q: %w", id, s.dir, err)
		}
		if cv, ok := s.ix.lookupID(e.EventID); ok {
			out := e
			out.ControlVersion = cv
			return out, nil
		}
		out := e
		out.ControlVersion = s.ix.highWater() + 1
		if out.ControlVersion > maxPosition {
			return e, fmt.Errorf("filesource: append %s: %q has used every position up to %d; start a new feed directory", id, s.dir, maxPosition)
		}
		name := s.freeName(out.ControlVersion)
		err := s.write(out, name)
		if err == nil {
			s.ix.update(name) // cheap: one small file; the queued notification re-reads it once more
			return out, nil
		}
		if !errors.Is(err, fs.ErrExist) || attempt == maxWriteAttempts {
			return e, fmt.Errorf("filesource: append %s: write %s: %w", id, name, err)
		}
		// Another program put a file there without the lock, or a change
		// notification was lost: look at the whole directory again.
		s.log.Warn("filesource: the chosen file name exists but was not in the index; rescanning the directory",
			"dir", s.dir, "file", name)
		if err := s.ix.fullScan(ctx, noLock); err != nil {
			return e, fmt.Errorf("filesource: append %s: rescan %q: %w", id, s.dir, err)
		}
	}
}

// freeName returns the file name for position cv: fileName(cv), or, if a
// file the index knows already has that name (a foreign writer's file at
// another position), the first free "%020d-N.json".
func (s *Sink) freeName(cv uint64) string {
	name := fileName(cv)
	for n := 1; ; n++ {
		if _, taken := s.ix.entries[name]; !taken {
			return name
		}
		name = fmt.Sprintf("%020d-%d.json", cv, n)
	}
}

// testHookBeforeRename, if set (tests only), runs before the Sink renames
// its temporary file to the final path.
var testHookBeforeRename func(path string)

// testNoSync skips the fsyncs of Append (tests only: multi-process stress
// runs, where durability is not under test).
var testNoSync = false

// write stores ev atomically and durably under name.
func (s *Sink) write(ev controlevent.Event, name string) error {
	b, err := controlevent.Marshal(ev)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	tmp, err := os.CreateTemp(s.dir, tempPrefix+"*")
	if err != nil {
		return err
	}
	tmpName := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	if _, err := tmp.Write(b); err != nil {
		return err
	}
	if !testNoSync {
		if err := tmp.Sync(); err != nil {
			return err
		}
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	path := filepath.Join(s.dir, name)
	if testHookBeforeRename != nil {
		testHookBeforeRename(path)
	}
	if err := renameNoReplace(tmpName, path); err != nil {
		return err
	}
	ok = true
	if testNoSync {
		return nil
	}
	if err := s.dirF.Sync(); err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}

// renameChecked renames oldpath to newpath unless newpath exists.
func renameChecked(oldpath, newpath string) error {
	if _, err := os.Lstat(newpath); err == nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: fs.ErrExist}
	}
	return os.Rename(oldpath, newpath)
}

// Close releases the lock file, the directory and the inotify descriptor.
// Later calls return errors wrapping feed.ErrClosed. Close is idempotent and
// waits for an Append in progress.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := errors.Join(s.ix.close(), s.lock.Close(), s.dirF.Close())
	if err != nil {
		return fmt.Errorf("filesource: close sink %q: %w", s.dir, err)
	}
	return nil
}

// quoteID quotes an EventID for an error message, shortened if long.
func quoteID(id string) string {
	if len(id) > 64 {
		return fmt.Sprintf("%q...", id[:64])
	}
	return fmt.Sprintf("%q", id)
}
