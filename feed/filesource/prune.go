package filesource

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// pruneChunk is how many files Prune deletes per hold of the exclusive lock,
// so that writers wait for one chunk at most.
const pruneChunk = 1000

// PruneOptions configures Prune. A nil *PruneOptions or the zero value
// selects the defaults.
type PruneOptions struct {
	// Logger receives operational messages. Nil discards them.
	Logger *slog.Logger
	// LockTimeout bounds each wait for the directory's exclusive lock;
	// zero means DefaultLockTimeout.
	LockTimeout time.Duration
	// Progress, if not nil, is called after each chunk of deletions with
	// the number of files deleted so far and the number to delete.
	Progress func(deleted, total int)
}

// Validate reports whether o holds acceptable values. A nil o is valid.
func (o *PruneOptions) Validate() error {
	if o != nil && o.LockTimeout < 0 {
		return fmt.Errorf("filesource: prune options: LockTimeout is %v; it must be >= 0 (0 selects %v)", o.LockTimeout, DefaultLockTimeout)
	}
	return nil
}

// PruneResult reports what Prune did.
type PruneResult struct {
	// PrunedThrough is the directory's retention after Prune: the
	// position recorded in the prune marker (through, or higher if an
	// earlier prune went further).
	PrunedThrough uint64
	// Previous is the marker's position before Prune, 0 if there was none.
	Previous uint64
	// HighWater is the highest position ever taken in the directory, as
	// recorded in the marker.
	HighWater uint64
	// Deleted is the number of files Prune deleted.
	Deleted int
}

// Prune removes the events at positions up to and including through from the
// feed directory dir. It first records the retention in the prune marker
// (".pruned": through and the directory's high water, see the package
// documentation), written atomically and durably under the exclusive lock,
// then deletes every ".json" file at a position <= through (good or bad),
// in chunks, each under the exclusive lock. From the moment the marker is
// written, a Source polled from a cursor below through reports a
// *feed.CursorBehindError, and a Sink keeps assigning positions above the
// high water even if every file is gone.
//
// Prune does not know which consumers still need the events: callers check
// that first (controlfeed prune reads the nodes' cursors). A through at or
// below the marker's position changes no marker and only deletes files left
// by an interrupted Prune. It fails, changing nothing, if dir does not exist,
// through is 0, above the highest position taken in the directory, or above
// 2^63-1, the marker cannot be read, or a bad file's position cannot be
// determined (it might be at or below through; fix or remove it first).
//
// A crash or a cancelled ctx during the deletions leaves the marker written
// and some files behind; they are invisible to readers (below the
// retention), and running Prune again deletes them. Prune never creates dir.
func Prune(ctx context.Context, dir string, through uint64, opts *PruneOptions) (PruneResult, error) {
	var res PruneResult
	if err := opts.Validate(); err != nil {
		return res, err
	}
	var o PruneOptions
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.LockTimeout == 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if dir == "" {
		return res, fmt.Errorf("filesource: prune: %w", errEmptyDir)
	}
	fail := func(format string, args ...any) (PruneResult, error) {
		return res, fmt.Errorf("filesource: prune %q through %d: %w", dir, through, fmt.Errorf(format, args...))
	}
	info, err := os.Stat(dir)
	if err != nil {
		return fail("%w", err)
	}
	if !info.IsDir() {
		return fail("not a directory")
	}
	if through == 0 {
		return fail("positions start at 1, so there is nothing at or below 0 to prune")
	}
	if through > maxPosition {
		return fail("above the highest usable position %d", uint64(maxPosition))
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fail("open the lock file: %w", err)
	}
	defer lock.Close()

	victims, err := pruneMark(ctx, dir, through, lock, o, &res)
	if err != nil {
		return fail("%w", err)
	}
	total := len(victims)
	for len(victims) > 0 {
		n := min(pruneChunk, len(victims))
		if err := pruneDelete(ctx, dir, victims[:n], lock, o.LockTimeout); err != nil {
			return fail("deleted %d of %d files, then: %w (run prune again to delete the rest)", res.Deleted, total, err)
		}
		res.Deleted += n
		victims = victims[n:]
		if o.Progress != nil {
			o.Progress(res.Deleted, total)
		}
	}
	o.Logger.Info("filesource: pruned the feed", "dir", dir, "pruned_through", res.PrunedThrough,
		"high_water", res.HighWater, "deleted", res.Deleted)
	return res, nil
}

// pruneMark takes the exclusive lock, reads the whole directory, writes the
// new marker if through is above the old one, and returns the names of the
// files at or below the retention.
func pruneMark(ctx context.Context, dir string, through uint64, lock *os.File, o PruneOptions, res *PruneResult) ([]string, error) {
	if err := lockFile(ctx, lock, lockExclusive, o.LockTimeout); err != nil {
		return nil, fmt.Errorf("lock %s: %w", lockName, err)
	}
	defer unlockFile(lock)
	ix := newIndex(dir, o.Logger, false)
	if err := ix.fullScan(ctx, noLock); err != nil {
		return nil, err
	}
	if err := ix.sinkProblem(); err != nil {
		return nil, fmt.Errorf("cannot tell which files are at or below it: %w", err)
	}
	m := ix.marker
	res.Previous = m.PrunedThrough
	hw := ix.highWater()
	if through > hw {
		return nil, fmt.Errorf("the highest position taken in the directory is %d; prune only positions that exist", hw)
	}
	if through > m.PrunedThrough {
		m = marker{PrunedThrough: through, HighWater: hw}
		if err := writeMarker(dir, m); err != nil {
			return nil, fmt.Errorf("write the prune marker %s: %w", markerName, err)
		}
	}
	res.PrunedThrough, res.HighWater = m.PrunedThrough, m.HighWater
	var victims []string
	for name, e := range ix.entries {
		if e.pos != 0 && e.pos <= m.PrunedThrough {
			victims = append(victims, name)
		}
	}
	slices.Sort(victims)
	return victims, nil
}

// pruneDelete deletes names from dir under the exclusive lock.
func pruneDelete(ctx context.Context, dir string, names []string, lock *os.File, timeout time.Duration) error {
	if err := lockFile(ctx, lock, lockExclusive, timeout); err != nil {
		return fmt.Errorf("lock %s: %w", lockName, err)
	}
	defer unlockFile(lock)
	for _, name := range names {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}
