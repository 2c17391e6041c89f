package filesource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
)

// fallbackWaitInterval is how often Wait re-lists the directory when no
// change notification is available.
const fallbackWaitInterval = 100 * time.Millisecond

// Source reads the events of a feed directory. It implements feed.Source,
// feed.Waiter and feed.HeadReporter, but not feed.Acker, and not
// feed.GapChecker: a file feed's positions may be sparse.
//
// A Source is safe for concurrent use by multiple goroutines. It holds an
// inotify descriptor (on Linux) open until Close; it opens the directory's
// lock file only while it holds the lock, so it never keeps a removed
// directory alive.
type Source struct {
	dir         string
	maxBatch    int
	lockTimeout time.Duration

	mu     sync.Mutex
	ix     *index
	closed bool
}

// NewSource opens a Source on dir, which must exist: a reader never creates
// its feed directory (only a Sink does), so a mistyped directory fails here
// instead of leaving a node waiting on an empty feed for ever. A node started
// before its producer needs the directory created first (mkdir). NewSource
// fails too when the directory cannot be listed (no read permission), so an
// unusable feed stops a node at start-up rather than at every poll. It
// creates the directory's lock file if it is missing and it may; in a
// directory it may not write, it reads without the lock file until one
// appears. It scans the directory once, lazily, on the first call. opts may
// be nil.
func NewSource(dir string, opts *Options) (*Source, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	o := opts.withDefaults()
	if dir == "" {
		return nil, fmt.Errorf("filesource: open source: %w", errEmptyDir)
	}
	info, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("filesource: open source %q: the feed directory does not exist "+
			"(check the path; a reader never creates it: the producer's sink does, or create it yourself): %w", dir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("filesource: open source %q: %w", dir, err)
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("filesource: open source %q: not a directory", dir)
	}
	if err := checkListable(dir); err != nil {
		return nil, fmt.Errorf("filesource: open source %q: cannot list the feed directory (check its permissions for this user): %w", dir, err)
	}
	lock, err := openReaderLock(dir)
	if err != nil {
		return nil, fmt.Errorf("filesource: open source %q: open the lock file: %w", dir, err)
	}
	if lock != nil {
		lock.Close()
	}
	return &Source{dir: dir, maxBatch: o.MaxBatch, lockTimeout: o.LockTimeout, ix: newIndex(dir, o.Logger, true)}, nil
}

// checkListable reads one name of directory dir, which fails when the
// process may not list it.
func checkListable(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Readdirnames(1); err != nil && err != io.EOF {
		return err
	}
	return nil
}

// Name returns "file".
func (s *Source) Name() string { return Name }

// Dir returns the directory the Source reads.
func (s *Source) Dir() string { return s.dir }

// Poll returns up to Options.MaxBatch events with ControlVersion >
// sinceControlVersion, ascending, whatever the gaps between their positions.
// It reads only the files that changed since the previous call (see Cost in
// the package documentation), under a shared lock on the directory's lock
// file while it captures their names; it waits for that lock at most until
// ctx is done or Options.LockTimeout has passed (then the error wraps
// feed.ErrUnavailable).
//
// Files that are not one valid event are reported, never skipped:
//
//   - A bad file at a known position P (its control_version, or the number
//     of a name like "00000000000000000042.json"): Poll returns the events
//     below P first; once P is next, it fails with a *feed.InvalidEventError
//     for P, on every call until the cursor passes P (the consumer halts
//     there; an operator fixes the file or skips the event).
//   - Two files at P that differ (event_id, or bytes), or a bad file next to
//     a good one at P: the events below P first, then an error wrapping
//     ErrConflict naming both files, until one is removed.
//   - A bad file whose position cannot be determined, or a file that
//     appeared at or below a position this Source has already delivered (it
//     returned it, or was polled from a cursor at or above it): every Poll
//     fails, naming the file (late writes wrap ErrLateWrite), until it is
//     removed; a late file above sinceControlVersion is not missed (the
//     consumer polls from below it again), so it is read in order instead.
//
// A cursor below the prune marker's position returns a
// *feed.CursorBehindError; without a marker, no cursor is behind retention.
// After Close it returns an error wrapping feed.ErrClosed.
func (s *Source) Poll(ctx context.Context, sinceControlVersion uint64) ([]controlevent.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.refreshLocked(ctx); err != nil {
		return nil, fmt.Errorf("filesource: poll %q after %d: %w", s.dir, sinceControlVersion, err)
	}
	evs, err := s.ix.poll(sinceControlVersion, s.maxBatch)
	if err != nil {
		return nil, fmt.Errorf("filesource: poll %q after %d: %w", s.dir, sinceControlVersion, err)
	}
	return evs, nil
}

// Head returns the highest position taken in the directory (by an event, a
// bad file with a known position, or, per the prune marker, a pruned file),
// 0 if there is none. It fails like Poll on what stops the whole feed.
func (s *Source) Head(ctx context.Context) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.refreshLocked(ctx); err != nil {
		return 0, fmt.Errorf("filesource: head %q: %w", s.dir, err)
	}
	if err := s.ix.blocking(); err != nil {
		return 0, fmt.Errorf("filesource: head %q: %w", s.dir, err)
	}
	return s.ix.highWater(), nil
}

// Wait blocks until a Poll from sinceControlVersion has something to return
// or report (an event above it, a bad file, retention), ctx is done (it
// returns ctx's error), or the Source is closed (an error wrapping
// feed.ErrClosed). On Linux it sleeps on inotify; elsewhere it re-lists the
// directory every 100ms. A return without new events is possible but rare.
func (s *Source) Wait(ctx context.Context, sinceControlVersion uint64) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return fmt.Errorf("filesource: wait %q: %w", s.dir, feed.ErrClosed)
		}
		err := s.refreshLocked(ctx)
		ready := err != nil || s.ix.ready(sinceControlVersion)
		w := s.ix.w
		s.mu.Unlock()
		if ready {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return ctxErr
			}
			return nil // the error, if any, is Poll's to report
		}
		if w == nil {
			t := time.NewTimer(fallbackWaitInterval)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
			continue
		}
		if err := w.wait(ctx); err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return ctxErr
			}
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return fmt.Errorf("filesource: wait %q: %w", s.dir, feed.ErrClosed)
			}
			return fmt.Errorf("filesource: wait %q: %w", s.dir, err)
		}
	}
}

// refreshLocked updates the index.
func (s *Source) refreshLocked(ctx context.Context) error {
	if s.closed {
		return feed.ErrClosed
	}
	return s.ix.refresh(ctx, s.lockShared)
}

// lockShared takes the shared lock readers hold while they capture the
// directory's names, so that no writer's rename lands in the middle of a
// listing.
func (s *Source) lockShared(ctx context.Context) (func(), error) {
	f, err := openReaderLock(s.dir)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", filepath.Join(s.dir, lockName), err)
	}
	if f == nil {
		return func() {}, nil // read-only directory without a lock file: no writer to exclude
	}
	if err := lockFile(ctx, f, lockShared, s.lockTimeout); err != nil {
		f.Close()
		return nil, fmt.Errorf("take the shared lock on %s: %w", filepath.Join(s.dir, lockName), err)
	}
	return func() { f.Close() }, nil // closing the descriptor releases its lock
}

// Close releases the inotify descriptor and wakes a blocked Wait. Later
// calls return errors wrapping feed.ErrClosed. Close is idempotent.
func (s *Source) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.ix.close(); err != nil {
		return fmt.Errorf("filesource: close source %q: %w", s.dir, err)
	}
	return nil
}
