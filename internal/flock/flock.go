//go:build darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd

// Package flock wraps flock(2) for the packages that hold advisory locks on
// files (the pump lock of a producer database, the file store's temp-file
// locks). A lock lives as long as its open file description: the kernel
// drops it when the holder closes the file or dies, SIGKILL included.
package flock

import (
	"os"
	"syscall"
)

// File applies flock(2) with how (syscall.LOCK_EX, LOCK_SH, LOCK_UN, with
// LOCK_NB for a non-blocking attempt) to f, retrying when a signal
// interrupts the call (EINTR). With LOCK_NB, a lock held elsewhere is an
// error for which errors.Is(err, syscall.EWOULDBLOCK) holds. It is safe for
// concurrent use on distinct files.
func File(f *os.File, how int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	cerr := rc.Control(func(fd uintptr) {
		for {
			if ferr = syscall.Flock(int(fd), how); ferr != syscall.EINTR {
				return
			}
		}
	})
	if cerr != nil {
		return cerr
	}
	return ferr
}
