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
// size. Several processes may share one directory; objects need no lock,
// because an object's content is fixed by its name and it appears by an
// atomic rename. The only lock is each Put's flock on its own temp file,
// which tells a live Put's file from a crashed one's (see Crash safety).
//
// # Crash safety
//
// Put streams the content into a new temp file under tmp/, hashing it as it
// writes, then fsyncs the file, renames it to its final name and fsyncs the
// directories it changed. An object therefore exists under its reference
// complete and durable, or not at all: a crash at any point leaves at most an
// orphaned temp file, never a partial object. Only io.EOF ends the content:
// any other reader error, io.ErrUnexpectedEOF from a cut gzip stream or HTTP
// body included, fails the Put and stores nothing.
//
// Put returns a reference only when the file under it holds exactly the
// content. A file already there counts only if it is a regular file with
// the same bytes, compared with the content Put has just read (for content
// that fits in one buffer, 256 KiB by default, without writing a temp file
// at all); then it is left untouched, so concurrent and repeated Puts cause
// no rename churn. A file of the wrong size or content (truncated or
// corrupted by a damaged disk, a FIFO, a copy cut short by another tool) is
// replaced by the new complete copy with an atomic rename, so re-putting the
// true bytes repairs an object and readers see the old file or the good one,
// never a mix. A failed Put can always be retried with the same content; a
// success after any number of failures or crashes means the object is
// complete and durable.
//
// Temp files orphaned by a crash are removed by New and by Sweep, but never
// one that a live Put holds: each Put keeps an exclusive flock(2) on its temp
// file until the file has its final name, and Sweep skips files it cannot
// lock, whatever their age and whichever process (or Store) writes them.
// Sweep also skips files younger than its threshold (Options.TempGrace, 15
// minutes, at New), which is the only protection on platforms without flock
// (Windows) or file systems that do not support it.
//
// Get and GetBytes refuse anything but a regular file at an object's path
// with ErrCorrupt, and do not block on a FIFO: they open it with O_NONBLOCK
// (on Windows, after checking its type).
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
