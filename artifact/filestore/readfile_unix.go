//go:build unix

package filestore

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// closeBeforeRename is false: a Put keeps its temp file open, and its lock
// held, until the file has its final name.
const closeBeforeRename = false

// openObject opens the object file at path for reading. It opens with
// O_NONBLOCK, so that a FIFO or a device put where an object should be
// cannot block the open, and returns errNotRegular for anything but a
// regular file. O_NONBLOCK changes nothing for reads of a regular file.
func openObject(path string) (*os.File, os.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, errNotRegular
	}
	return f, fi, nil
}

// readFile reads the regular file at path, of at most limit bytes, with one
// open, fstat, read (more only on a short read) and close, and no *os.File:
// the object files are immutable, so the size fstat reports is the size to
// read. It opens with O_NONBLOCK, so a FIFO at path cannot block it. Errors:
// one wrapping fs.ErrNotExist, errNotRegular, errTooLarge, or the system
// call's.
func readFile(path string, limit int64) ([]byte, error) {
	var fd int
	err := retryEINTR(func() (err error) {
		fd, err = syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
		return err
	})
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := retryEINTR(func() error { return syscall.Fstat(fd, &st) }); err != nil {
		return nil, &fs.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return nil, errNotRegular
	}
	if st.Size > limit {
		return nil, errTooLarge
	}
	b := make([]byte, st.Size)
	for off := 0; off < len(b); {
		var n int
		err := retryEINTR(func() (err error) {
			n, err = syscall.Read(fd, b[off:])
			return err
		})
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return nil, fmt.Errorf("read %s: %d of %d bytes, then end of file", path, off, len(b))
		}
		off += n
	}
	return b, nil
}

func retryEINTR(f func() error) error {
	for {
		if err := f(); err != syscall.EINTR {
			return err
		}
	}
}
