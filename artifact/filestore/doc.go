// Package filestore is the local-directory artifact store, registered with
// package artifact as "file" (see Name). Activate it with a blank import and
// open it with artifact.Open("file", artifact.Config{Dir: dir}), or call New.
//
// # On-disk layout
//
// Under the store directory:
//
//	sha256/ab/ab12...ef   one file per object, named by the 64 lowercase hex
//	                      digits of its sha256 and fanned out by the first two
//	                      digits (at most 256 subdirectories, so no single
//	                      directory grows with the whole history)
//	tmp/put-*.tmp         objects being written by Put
//
// Object files are plain copies of the content, mode 0644, so operators can
// inspect them with ordinary tools (sha256sum prints the file name). Nothing
// else is stored: the reference is the file name and the size is the file
// size. Several processes may share one directory; they coordinate only
// through atomic renames, no lock is needed because an object's content is
// fixed by its name.
//
// # Crash safety
//
// Put streams the content into a new temp file under tmp/, hashing it as it
// writes, then fsyncs the file, renames it to its final name and fsyncs the
// directories it changed. An object therefore exists under its reference
// complete and durable, or not at all: a crash at any point leaves at most an
// orphaned temp file, never a partial object. When the object already exists
// with the right size, Put only deletes its temp file; the existing file is
// not replaced, so concurrent and repeated Puts of the same content cause no
// rename churn. An existing file of the wrong size (truncated by a damaged
// disk, say) is replaced by the new complete copy.
//
// Temp files orphaned by a crash are removed by New, but only those older than
// Options.TempGrace (15 minutes by default): another process sharing the
// directory may be writing a younger one right now. Operators can call Sweep
// with their own age threshold.
//
// # Errors
//
// Errors start with "filestore:", the operation and its input, and wrap the
// artifact sentinels: ErrBadRef for a malformed reference (checked before the
// file system is touched, so no reference can name a path outside the store),
// ErrNotFound for a missing object, ErrCorrupt from the stream Get returns
// when the file no longer hashes to its name. Put's error wraps ctx.Err() when
// the context ends it and the reader's error when the reader fails. The store
// does not retry; callers own retry policy.
package filestore
