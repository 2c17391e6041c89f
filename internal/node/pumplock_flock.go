//go:build darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd

package node

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/controlfeed/controlfeed/internal/flock"
)

// PumpLockSuffix is appended to Config.DB to name the pump's lock file.
const PumpLockSuffix = ".pump.lock"

// pumpLock is the held lock of one producer database's pump: an exclusive
// flock(2) on DB + PumpLockSuffix, held for as long as the file stays open.
// The kernel drops it when the holder's process ends, however it ends
// (SIGKILL included), so a crashed holder never blocks its successor. The
// file itself is left in place: it records who holds or last held the lock.
type pumpLock struct{ f *os.File }

// lockPump takes the pump lock of the database at db without waiting. If
// another process (or another Node of this process) holds it, it returns an
// error naming the holder as recorded in the file (pid, host, start time)
// and what to do. On success it writes this process's pid and host into the
// file.
func lockPump(db string) (*pumpLock, error) {
	path := db + PumpLockSuffix
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("node: pump lock %s: %w", path, err)
	}
	err = flock.File(f, syscall.LOCK_EX|syscall.LOCK_NB)
	switch {
	case err == nil:
	case errors.Is(err, syscall.EWOULDBLOCK):
		holder, _ := io.ReadAll(io.LimitReader(f, 512))
		f.Close()
		h := strings.TrimSpace(string(holder))
		if h == "" {
			h = "a process that has not written its pid yet"
		}
		return nil, fmt.Errorf("node: database %s already has a running pump: %s holds %s; "+
			"one pump per producer database keeps the feed in commit order: stop that process first, "+
			"or run this one without --feed-sink (kv put/delete need no pump to queue changes)", db, h, path)
	case errors.Is(err, syscall.ENOLCK), errors.Is(err, syscall.EOPNOTSUPP):
		f.Close()
		return nil, fmt.Errorf("node: pump lock %s: the file system does not support flock (%v): put the producer's database on a local file system", path, err)
	default:
		f.Close()
		return nil, fmt.Errorf("node: pump lock %s: %w", path, err)
	}
	host, _ := os.Hostname()
	rec := fmt.Sprintf("pid %d on host %s (since %s)\n", os.Getpid(), host, time.Now().UTC().Format(time.RFC3339))
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(rec), 0) // informative only: the flock is the lock
	}
	return &pumpLock{f: f}, nil
}

// unlock releases the lock. The file stays.
func (l *pumpLock) unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
