package natsobject

import "io"

// SetUploadReader makes every upload read its content through wrap, until
// the returned function restores the default; tests inject broker faults
// between chunks with it. Not safe while Puts run.
func SetUploadReader(wrap func(io.Reader) io.Reader) (restore func()) {
	old := uploadReader
	uploadReader = wrap
	return func() { uploadReader = old }
}

// SetBeforeTransfer makes Get call f once the object is found readable,
// before its chunks are asked for, until the returned function restores
// the default. Not safe while Gets run.
func SetBeforeTransfer(f func()) (restore func()) {
	old := beforeTransfer
	beforeTransfer = f
	return func() { beforeTransfer = old }
}
