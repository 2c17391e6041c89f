//go:build darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd

package filestore

import (
	"errors"
	"os"
	"syscall"

	"github.com/controlfeed/controlfeed/internal/flock"
)

// lockTemp takes an exclusive flock(2) on f, a temp file Put has just
// created; closing f releases it. flock, unlike fcntl locks, belongs to
// the open file, so it also excludes another Store of the same process. It
// returns errTempClaimed if the lock is held already (a Sweep is removing
// the file), and nil without a lock where the file system does not support
// flock: Sweep then falls back to the file's age.
func lockTemp(f *os.File) error {
	err := flock.File(f, syscall.LOCK_EX|syscall.LOCK_NB)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EWOULDBLOCK):
		return errTempClaimed
	case errors.Is(err, syscall.ENOLCK), errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.EINVAL):
		return nil
	default:
		return err
	}
}

// claimTemp opens the temp file at path without blocking or following a
// symbolic link and takes its flock without waiting. It returns the open,
// locked file if no Put holds the file, errTempLive if one does, and the
// open's or flock's error otherwise. Where the file system does not support
// flock the file is returned unlocked: the caller has only its age to go by.
func claimTemp(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	err = flock.File(f, syscall.LOCK_EX|syscall.LOCK_NB)
	switch {
	case err == nil, errors.Is(err, syscall.ENOLCK), errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.EINVAL):
		return f, nil
	case errors.Is(err, syscall.EWOULDBLOCK):
		f.Close()
		return nil, errTempLive
	default:
		f.Close()
		return nil, err
	}
}
