package filesource

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
)

// fallbackWaitInterval is how often Wait re-lists the directory when no
// change notification is available.
const fallbackWaitInterval = 100 * time.Millisecond

// Source reads the events of a feed directory. It implements feed.Source,
// feed.Waiter and feed.HeadReporter, but not feed.Acker.
//
// A Source is safe for concurrent use by multiple goroutines. It holds an
// inotify descriptor (on Linux) until Close.
type Source struct {
	dir      string
	maxBatch int

	mu     sync.Mutex
	ix     *index
	closed bool
}

// NewSource opens a Source on dir, creating the directory (and its parents)
// if it does not exist yet, so a node may start before its producer. It scans
// the directory once, lazily, on the first call. opts may be nil.
func NewSource(dir string, opts *Options) (*Source, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	o := opts.withDefaults()
	if dir == "" {
		return nil, fmt.Errorf("filesource: open source: %w", errEmptyDir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("filesource: open source %q: create the feed directory: %w", dir, err)
	}
	info, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("filesource: open source %q: %w", dir, err)
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("filesource: open source %q: not a directory", dir)
	}
	ix, err := newIndex(dir, o.Logger)
	if err != nil {
		return nil, fmt.Errorf("filesource: open source %q: %w", dir, err)
	}
	return &Source{dir: dir, maxBatch: o.MaxBatch, ix: ix}, nil
}

// Name returns "file".
func (s *Source) Name() string { return Name }

// Dir returns the directory the Source reads.
func (s *Source) Dir() string { return s.dir }

// Poll returns up to Options.MaxBatch events with ControlVersion >
// sinceControlVersion, ascending. It reads only the files that changed since
// the previous call (see Cost in the package documentation).
//
// It fails, naming the file, while any ".json" file in the directory is
// unreadable, not a valid event, or claims the ControlVersion of a different
// event. If the oldest event in the directory is newer than
// sinceControlVersion+1 (older files were pruned), it returns a
// *feed.CursorBehindError. After Close it returns an error wrapping
// feed.ErrClosed.
func (s *Source) Poll(ctx context.Context, sinceControlVersion uint64) ([]controlevent.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.refreshLocked(); err != nil {
		return nil, fmt.Errorf("filesource: poll %q after %d: %w", s.dir, sinceControlVersion, err)
	}
	if first := s.ix.first(); first > sinceControlVersion+1 {
		return nil, fmt.Errorf("filesource: poll %q: %w", s.dir,
			&feed.CursorBehindError{Source: Name, Cursor: sinceControlVersion, FirstAvailable: first})
	}
	return s.ix.after(sinceControlVersion, s.maxBatch), nil
}

// Head returns the highest ControlVersion in the directory, 0 if it holds no
// event. It fails like Poll when a file is bad.
func (s *Source) Head(ctx context.Context) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.refreshLocked(); err != nil {
		return 0, fmt.Errorf("filesource: head %q: %w", s.dir, err)
	}
	return s.ix.head(), nil
}

// Wait blocks until the directory holds an event with ControlVersion >
// sinceControlVersion or a bad file (so that the next Poll has something to
// return or report), ctx is done (it returns ctx's error), or the Source is
// closed (an error wrapping feed.ErrClosed). On Linux it sleeps on inotify;
// elsewhere it re-lists the directory every 100ms. A return without new
// events is possible but rare.
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
		err := s.refreshLocked()
		ready := err != nil || s.ix.head() > sinceControlVersion
		w := s.ix.w
		s.mu.Unlock()
		if ready {
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

// refreshLocked updates the index and reports the first bad file.
func (s *Source) refreshLocked() error {
	if s.closed {
		return feed.ErrClosed
	}
	if err := s.ix.refresh(); err != nil {
		return err
	}
	return s.ix.problem()
}

// Close releases the inotify descriptor and wakes a blocked Wait. Later calls
// return errors wrapping feed.ErrClosed. Close is idempotent.
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
