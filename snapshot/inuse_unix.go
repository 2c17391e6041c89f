//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly || illumos

package snapshot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// shmDMSOffset is the byte of a WAL database's -shm file on which every
// open SQLite connection (unix VFS, which modernc.org/sqlite transpiles)
// holds a shared POSIX lock for as long as it is connected: the "dead man
// switch" of os_unix.c (UNIX_SHM_BASE 120 + SQLITE_SHM_NLOCK 8).
const shmDMSOffset = 128

// openByOtherProcess reports whether another process has the WAL database
// at target open, by asking the kernel (F_GETLK) who holds the -shm file's
// connection lock. It sees other processes only, never this one, and must
// be called while this process holds no connection to target: closing the
// probe's descriptor drops every POSIX lock this process has on the file.
// A database without a -shm file has no WAL connection.
func openByOtherProcess(target string) (pid int, err error) {
	f, err := os.Open(target + "-shm")
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("check who uses the database: %w", err)
	}
	defer f.Close()
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0, Start: shmDMSOffset, Len: 1}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_GETLK, &lk); err != nil {
		return 0, fmt.Errorf("check who uses the database (fcntl F_GETLK on %s-shm): %w", target, err)
	}
	if lk.Type == syscall.F_UNLCK {
		return 0, nil
	}
	return int(lk.Pid), nil
}
