package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/controlfeed/controlfeed/feed/filesource"
)

// The file feed under chaos (Config.Feed = FeedFile): the pump writes the
// feed into a directory and the nodes read it, with the faults that apply
// to a feed without a broker — kill -9 at every failure point and at random,
// stalls of the nodes and the pump, the disk-full node, producer power
// losses, the artifact store at its limit — plus a held feed lock: the
// harness takes the directory's exclusive lock (".lock", the one every
// Sink holds while it writes and every Source shares while it lists) for
// 0.5–15 s, past the Sources' and the Sink's LockTimeout (10 s) in about
// a third of the episodes. A held lock must make readers and the pump wait
// or report unavailable, never skip a file, never halt.

// Feed backends of a chaos run.
const (
	FeedJetStream = "jetstream"
	FeedFile      = "file"
)

const (
	feedLockMin = 500 * time.Millisecond
	feedLockMax = 15 * time.Second
)

// openFeedDir opens the harness's own reader of the feed directory.
func (h *harness) openFeedDir() error {
	src, err := filesource.NewSource(h.feedDir, &filesource.Options{})
	if err != nil {
		return fmt.Errorf("chaos: open the feed directory: %w", err)
	}
	h.fsrc = src
	return nil
}

// readFeedDir returns every event of the feed directory, in position
// order.
func (h *harness) readFeedDir(ctx context.Context) ([]streamEvent, error) {
	var out []streamEvent
	var after uint64
	for {
		evs, err := h.fsrc.Poll(ctx, after)
		if err != nil {
			return nil, fmt.Errorf("read the feed directory after %d: %w", after, err)
		}
		if len(evs) == 0 {
			return out, nil
		}
		for _, e := range evs {
			out = append(out, streamEvent{seq: e.ControlVersion, id: e.EventID})
			after = e.ControlVersion
		}
	}
}

// feedLocks holds the feed directory's exclusive lock cfg.FeedLocks times
// over the fault phase.
func (h *harness) feedLocks(ctx context.Context, done <-chan struct{}) {
	h.episodes(ctx, done, h.cfg.FeedLocks, h.cfg.Duration, func(e int) bool {
		d := feedLockMin + time.Duration(h.intn(int(feedLockMax-feedLockMin)))
		if err := h.holdFeedLock(ctx, d); err != nil {
			h.rep.problem("feed lock %d: %v", e, err)
			return false
		}
		h.mu.Lock()
		h.rep.FeedLocks++
		h.rep.FeedLockTime += d
		if d > filesource.DefaultLockTimeout {
			h.rep.FeedLocksPastTimeout++
		}
		h.mu.Unlock()
		return true
	})
}

// holdFeedLock takes the exclusive flock of the feed directory (waiting
// for a Sink's write in progress) and holds it for d.
func (h *harness) holdFeedLock(ctx context.Context, d time.Duration) error {
	f, err := os.OpenFile(filepath.Join(h.feedDir, ".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if err != unix.EWOULDBLOCK || time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("take the lock of %s: %w", h.feedDir, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(d) // not cut short: the lock is released at once after
	return unix.Flock(int(f.Fd()), unix.LOCK_UN)
}
