//go:build !unix

package filestore

import (
	"io"
	"os"
)

// closeBeforeRename is true: this platform may refuse to rename a file that
// is open.
const closeBeforeRename = true

// openObject opens the object file at path for reading, after checking
// that it is a regular file (errNotRegular otherwise), so that nothing else
// put where an object should be is opened.
func openObject(path string) (*os.File, os.FileInfo, error) {
	if fi, err := os.Lstat(path); err != nil {
		return nil, nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, nil, errNotRegular
	}
	f, err := os.Open(path)
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

// readFile reads the regular file at path, of at most limit bytes. Errors:
// one wrapping fs.ErrNotExist, errNotRegular, errTooLarge, or the read's.
func readFile(path string, limit int64) ([]byte, error) {
	f, fi, err := openObject(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi.Size() > limit {
		return nil, errTooLarge
	}
	b := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, err
	}
	return b, nil
}
