package filestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/internal/failpoint"
)

// Put streams everything r yields into the store and returns its reference,
// "sha256:<hex>" of the bytes. It returns a reference only once the file
// under it is complete, holds exactly those bytes and is durable (see the
// package documentation on crash safety).
//
// Only io.EOF ends the content. Any other error of r fails the Put,
// io.ErrUnexpectedEOF included: it is what a gzip reader or an HTTP body
// returns when its stream was cut short, and the bytes before it are not
// the content. ctx is checked before each chunk of Options.BufferSize bytes.
// When ctx is done or r fails, Put removes its temp file and returns an
// error wrapping ctx.Err() or r's error, and stores nothing.
//
// An object already stored under the reference counts only if it is a
// regular file with the same bytes (compared with the content just read);
// then it is left untouched, so repeated and concurrent Puts cause no
// rename churn. A file of the wrong size or content, or anything else at
// its path, is replaced atomically by the new copy. Memory use is at most
// two buffers of Options.BufferSize, whatever the size of the content.
func (s *Store) Put(ctx context.Context, r io.Reader) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("filestore: put: %w", err)
	}
	bp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bp)
	buf := *bp
	n, eof, err := fill(r, buf)
	if err != nil {
		return "", fmt.Errorf("filestore: put: read content after %d bytes: %w", n, err)
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("filestore: put: canceled after %d bytes: %w", n, err)
	}
	if eof {
		return s.putWhole(ctx, buf[:n])
	}
	return s.putStream(ctx, r, buf, n)
}

// maxEmptyReads is how many successive Reads may return no data and no
// error before fill gives up on the reader.
const maxEmptyReads = 100

// fill reads from r into buf until buf is full, r returns io.EOF, or r
// fails. It returns the bytes read, whether r ended with io.EOF, and r's
// error otherwise: every error but io.EOF, io.ErrUnexpectedEOF included, is
// a failure of the reader, not the end of the content. (io.ReadFull cannot
// be used here: it reports a clean end after a partial buffer as
// io.ErrUnexpectedEOF, the very error a truncated stream returns.)
func fill(r io.Reader, buf []byte) (n int, eof bool, err error) {
	for empty := 0; n < len(buf); {
		m, err := r.Read(buf[n:])
		if m < 0 || m > len(buf)-n {
			return n, false, fmt.Errorf("reader returned %d from a Read of %d bytes", m, len(buf)-n)
		}
		n += m
		switch {
		case err == io.EOF:
			return n, true, nil
		case err != nil:
			return n, false, err
		case m > 0:
			empty = 0
		default:
			if empty++; empty >= maxEmptyReads {
				return n, false, io.ErrNoProgress
			}
		}
	}
	return n, false, nil
}

// putWhole stores content b that fit in one buffer. No temp file is
// written when the object is already stored intact.
func (s *Store) putWhole(ctx context.Context, b []byte) (string, error) {
	ref := controlevent.Checksum(b)
	final := s.path(ref)
	sp := s.bufs.Get().(*[]byte)
	same := holdsBytes(final, b, *sp)
	s.bufs.Put(sp)
	if same {
		return ref, s.present(ref, final)
	}
	f, err := s.createTemp()
	if err != nil {
		return "", fmt.Errorf("filestore: put %s: create temp file: %w", ref, err)
	}
	t := &tempFile{f: f, rel: filepath.Join(tmpDir, filepath.Base(f.Name()))}
	defer t.discard(s)
	if _, err := f.Write(b); err != nil {
		return "", fmt.Errorf("filestore: put %s: write %s: %w", ref, t.rel, err)
	}
	if err := failpoint.Inject(failpoint.FilestoreMidWrite); err != nil {
		return "", fmt.Errorf("filestore: put %s: write %s: %w", ref, t.rel, err)
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("filestore: put %s: canceled after %d bytes: %w", ref, len(b), err)
	}
	return ref, s.commit(t, ref, final)
}

// putStream stores content larger than one buffer: buf[:n], its first
// part, then the rest of r, through a temp file.
func (s *Store) putStream(ctx context.Context, r io.Reader, buf []byte, n int) (string, error) {
	f, err := s.createTemp()
	if err != nil {
		return "", fmt.Errorf("filestore: put: create temp file: %w", err)
	}
	t := &tempFile{f: f, rel: filepath.Join(tmpDir, filepath.Base(f.Name()))}
	defer t.discard(s)
	h := controlevent.NewHash()
	h.Write(buf[:n])
	if _, err := f.Write(buf[:n]); err != nil {
		return "", fmt.Errorf("filestore: put: write %s: %w", t.rel, err)
	}
	if err := failpoint.Inject(failpoint.FilestoreMidWrite); err != nil {
		return "", fmt.Errorf("filestore: put: write %s: %w", t.rel, err)
	}
	size := int64(n)
	for {
		if err := ctx.Err(); err != nil {
			return "", fmt.Errorf("filestore: put: canceled after %d bytes: %w", size, err)
		}
		n, eof, rerr := fill(r, buf)
		if rerr != nil {
			return "", fmt.Errorf("filestore: put: read content after %d bytes: %w", size+int64(n), rerr)
		}
		if n > 0 {
			h.Write(buf[:n])
			if _, err := f.Write(buf[:n]); err != nil {
				return "", fmt.Errorf("filestore: put: write %s: %w", t.rel, err)
			}
			size += int64(n)
		}
		if eof {
			break
		}
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("filestore: put: canceled after %d bytes: %w", size, err)
	}
	ref := controlevent.ChecksumOf(h)
	final := s.path(ref)
	sp := s.bufs.Get().(*[]byte)
	same, err := holdsFile(ctx, final, f, size, buf, *sp)
	s.bufs.Put(sp)
	if err != nil {
		return "", fmt.Errorf("filestore: put %s: compare with the stored object: %w", ref, err)
	}
	if same {
		return ref, s.present(ref, final)
	}
	return ref, s.commit(t, ref, final)
}

// present finishes a Put whose object is already stored intact. The
// directory is still fsynced: the file may have just been renamed there by
// a concurrent Put that has not synced it yet, and the caller is about to
// rely on it.
func (s *Store) present(ref, final string) error {
	if err := syncDir(filepath.Dir(final)); err != nil {
		return fmt.Errorf("filestore: put %s: %w", ref, err)
	}
	return nil
}

// holdsBytes reports whether the file at path is a regular file holding
// exactly b. scratch must be at least len(b) bytes. Anything that keeps it
// from saying yes (no file, another kind of file, another size, other
// bytes, a read error) is a no: Put then replaces the file, which repairs
// it or fails with the real error.
func holdsBytes(path string, b, scratch []byte) bool {
	f, fi, err := openObject(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if fi.Size() != int64(len(b)) {
		return false
	}
	got := scratch[:len(b)]
	if _, err := io.ReadFull(f, got); err != nil {
		return false
	}
	return bytes.Equal(got, b)
}

// holdsFile reports whether the file at path is a regular file with the
// same size bytes as tmp, the temp file Put has just written and hashed, so
// that it hashes to the same reference. It compares in chunks of len(a)
// (a and b being equal-sized buffers), checking ctx between chunks; the
// only error is ctx's. Like holdsBytes, anything else that keeps it from
// saying yes is a no.
func holdsFile(ctx context.Context, path string, tmp *os.File, size int64, a, b []byte) (bool, error) {
	if fi, err := os.Lstat(path); err != nil || !fi.Mode().IsRegular() || fi.Size() != size {
		return false, nil // no open at all in the common case: a new object
	}
	f, fi, err := openObject(path)
	if err != nil {
		return false, nil
	}
	defer f.Close()
	if fi.Size() != size {
		return false, nil
	}
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		n := int(min(int64(len(a)), size-off))
		if _, err := tmp.ReadAt(a[:n], off); err != nil {
			return false, nil
		}
		if _, err := io.ReadFull(f, b[:n]); err != nil {
			return false, nil
		}
		if !bytes.Equal(a[:n], b[:n]) {
			return false, nil
		}
		off += int64(n)
	}
	return true, nil
}

// tempFile is a Put's temp file until it is renamed to its final name.
type tempFile struct {
	f       *os.File // nil once closed
	rel     string   // path relative to the store directory, for errors
	renamed bool
}

// discard closes the temp file if it is still open and removes it unless
// it has its final name.
func (t *tempFile) discard(s *Store) {
	name := filepath.Join(s.dir, t.rel)
	if t.f != nil {
		t.f.Close()
		t.f = nil
	}
	if t.renamed {
		return
	}
	if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.opts.Logger.Warn("filestore: put: remove temp file", "file", t.rel, "err", err)
	}
}

// createTemp creates a temp file in tmp/ and locks it (see lockTemp), so
// that a Sweep in any process leaves it alone while this Put runs. A Sweep
// that removed the new file between its creation and the lock (possible
// only with a zero age threshold) is detected, and another file made.
func (s *Store) createTemp() (*os.File, error) {
	dir := filepath.Join(s.dir, tmpDir)
	for range 8 {
		f, err := os.CreateTemp(dir, tmpPrefix+"*"+tmpSuffix)
		if err != nil {
			return nil, err
		}
		err = lockTemp(f)
		if err == nil && sameFile(f, f.Name()) {
			return f, nil
		}
		f.Close()
		if err != nil && !errors.Is(err, errTempClaimed) {
			os.Remove(f.Name())
			return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		// Claimed or removed by a Sweep, which removes it if it is
		// still there.
	}
	return nil, fmt.Errorf("temp files in %s keep being removed by a concurrent Sweep", dir)
}

// sameFile reports whether path still names the open file f.
func sameFile(f *os.File, path string) bool {
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	pi, err := os.Lstat(path)
	return err == nil && os.SameFile(fi, pi)
}

// commit makes the temp file the object final, durably: fsync the file,
// create the fan-out directory if needed and fsync its parent, rename over
// whatever is at final (a missing, truncated or corrupt object), fsync the
// fan-out directory. The temp file stays open, and its lock held, until it
// has its final name, except where the platform cannot rename an open file.
func (s *Store) commit(t *tempFile, ref, final string) error {
	f := t.f
	if err := f.Chmod(objectPerm); err != nil {
		return fmt.Errorf("filestore: put %s: chmod %s: %w", ref, t.rel, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("filestore: put %s: fsync %s: %w", ref, t.rel, err)
	}
	fanout := filepath.Dir(final)
	if _, err := os.Stat(fanout); errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(fanout, dirPerm); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("filestore: put %s: %w", ref, err)
		}
		if err := syncDir(filepath.Dir(fanout)); err != nil {
			return fmt.Errorf("filestore: put %s: %w", ref, err)
		}
	}
	if closeBeforeRename {
		t.f = nil
		if err := f.Close(); err != nil {
			return fmt.Errorf("filestore: put %s: close %s: %w", ref, t.rel, err)
		}
	}
	if err := os.Rename(filepath.Join(s.dir, t.rel), final); err != nil {
		return fmt.Errorf("filestore: put %s: %w", ref, err)
	}
	t.renamed = true
	if t.f != nil {
		t.f = nil
		if err := f.Close(); err != nil {
			return fmt.Errorf("filestore: put %s: close %s: %w", ref, t.rel, err)
		}
	}
	if err := syncDir(fanout); err != nil {
		// The object is complete under its name; only its durability
		// across a power loss is in doubt. Report it so the caller
		// retries (which is cheap and idempotent).
		return fmt.Errorf("filestore: put %s: %w", ref, err)
	}
	return nil
}
