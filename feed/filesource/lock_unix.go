//go:build unix

package filesource

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/controlfeed/controlfeed/feed"
)

// Lock modes of lockFile.
const (
	lockExclusive = unix.LOCK_EX // writers: choose a position and write
	lockShared    = unix.LOCK_SH // readers: capture the directory's names
)

// maxLockPoll caps the interval between two attempts to take a contended
// lock. It is short so that a writer gets in as soon as the readers' shared
// holds leave a gap; a waiting process makes at most one cheap system call
// per interval.
const maxLockPoll = time.Millisecond

// lockFile takes a flock of the given mode on f. It polls with a short
// backoff (flock(2) cannot be interrupted otherwise), so that ctx is honoured
// while another process holds a conflicting lock, and gives up after timeout
// (if > 0) with an error wrapping feed.ErrUnavailable: a lock held that long
// is a stuck process, not a bad event.
//
// Readers and writers poll alike, so a steady stream of readers does not
// shut a writer out for longer than readers keep the lock continuously held;
// readers hold it only while they list names, never while they read files.
func lockFile(ctx context.Context, f *os.File, mode int, timeout time.Duration) error {
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	delay := 50 * time.Microsecond
	for {
		err := unix.Flock(int(f.Fd()), mode|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if err != unix.EWOULDBLOCK && err != unix.EINTR {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		wait := delay
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				return fmt.Errorf("another process has held it for more than %v (a writer stuck in its critical section?): %w", timeout, feed.ErrUnavailable)
			}
			wait = min(wait, left)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(delay*2, maxLockPoll)
	}
}

func unlockFile(f *os.File) error {
	return unix.Flock(int(f.Fd()), unix.LOCK_UN)
}

// openReaderLock opens the directory's lock file for a shared lock, creating
// it if it is missing. It returns nil, nil if the file does not exist and
// cannot be created (a read-only directory nobody has written with the
// protocol yet: there is no writer to exclude, and the next call tries again).
func openReaderLock(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o644)
	if err == nil {
		return f, nil
	}
	if !errors.Is(err, fs.ErrPermission) && !errors.Is(err, unix.EROFS) {
		return nil, err
	}
	f, err = os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return f, err
}
