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
// appends are serialized by a mutex and by an flock on the directory's lock
// file. It holds the lock file, the directory and an inotify descriptor open
// until Close.
type Sink struct {
	dir string
	log *slog.Logger

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
	ix, err := newIndex(dir, o.Logger)
	if err != nil {
		lock.Close()
		dirF.Close()
		return nil, fmt.Errorf("filesource: open sink %q: %w", dir, err)
	}
	s := &Sink{dir: dir, log: o.Logger, ix: ix, lock: lock, dirF: dirF}
	if err := s.removeStaleTemps(); err != nil {
		s.Close()
		return nil, fmt.Errorf("filesource: open sink %q: %w", dir, err)
	}
	return s, nil
}

// removeStaleTemps deletes temporary files: under the lock, no writer is
// between creating and renaming one, so any that exists is from a crash.
func (s *Sink) removeStaleTemps() error {
	if err := lockFile(context.Background(), s.lock); err != nil {
		return fmt.Errorf("lock %s: %w", lockName, err)
	}
	defer unlockFile(s.lock)
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	for _, de := range entries {
		if name := de.Name(); strings.HasPrefix(name, tempPrefix) && de.Type().IsRegular() {
			if err := os.Remove(filepath.Join(s.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			s.log.Info("filesource: removed a temporary file left by a crashed writer", "dir", s.dir, "file", name)
		}
	}
	return nil
}

// Name returns "file".
func (s *Sink) Name() string { return Name }

// Dir returns the directory the Sink writes.
func (s *Sink) Dir() string { return s.dir }

// Append writes e to the directory as the event with the next ControlVersion
// (the highest in the directory + 1) and returns it stamped. If an event with
// the same EventID is already in the directory, it writes nothing and
// returns e stamped with that event's ControlVersion (the lowest, should a
// foreign writer have added it twice).
//
// e must have a non-empty EventID, ControlVersion 0 and pass
// controlevent.Event.ValidateUnpublished; otherwise, and on any failure, the
// input is returned unchanged with an error. The file name is derived from the
// ControlVersion only. Append returns after the file and the directory are
// synced; a crash before that leaves either no event or a complete one,
// which a retry with the same EventID then finds. Append waits for the
// directory's lock while another writer holds it, until ctx is done.
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
	if err := lockFile(ctx, s.lock); err != nil {
		return e, fmt.Errorf("filesource: append %s: lock %s: %w", id, filepath.Join(s.dir, lockName), err)
	}
	defer unlockFile(s.lock)

	// Holding the lock, every other writer's rename is complete and its
	// change notification queued, so the refreshed index is exact.
	if err := s.ix.refresh(); err != nil {
		return e, fmt.Errorf("filesource: append %s: read %q: %w", id, s.dir, err)
	}
	if len(s.ix.bad) > 0 {
		return e, fmt.Errorf("filesource: append %s: cannot choose a control_version in %q: %w", id, s.dir, s.ix.problem())
	}
	if cv, ok := s.ix.lookupID(e.EventID); ok {
		out := e
		out.ControlVersion = cv
		return out, nil
	}
	out := e
	out.ControlVersion = s.ix.head() + 1
	name := fileName(out.ControlVersion)
	if err := s.write(out, name); err != nil {
		return e, fmt.Errorf("filesource: append %s: write %s: %w", id, name, err)
	}
	s.ix.update(name) // cheap: one small file; the queued notification re-reads it once more
	return out, nil
}

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
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := renameNoReplace(tmpName, filepath.Join(s.dir, name)); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w (a writer that does not take the lock?)", err)
		}
		return err
	}
	ok = true
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
