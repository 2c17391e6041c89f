package natsobject

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/controlevent"
)

// MsgReupload is the message of the warning Put logs when an upload that
// reported success does not read back whole and it uploads the content
// again (see readback.go); tools that read logs can count it.
const MsgReupload = "natsobject: put: an upload that reported success does not read back whole; uploading again"

// Put spools r to a temporary file while hashing it, then makes sure the
// bucket holds the complete object under its reference, and returns the
// reference only then.
//
// Only io.EOF ends the content: any other error of r, io.ErrUnexpectedEOF
// included, fails the Put before anything is uploaded. An object already
// under the reference counts only if its metadata is not a deletion or a
// link, gives the content's size and digest, every chunk it names is in
// the bucket, and those chunks read back hash to the reference; otherwise
// (the metadata a failed upload left, a corrupted object) the object is
// uploaded again, which replaces it atomically: the Object Store writes the
// new chunks first, then the metadata, then purges the old chunks. After an
// upload Put counts the new upload's chunks in the bucket (see checkUpload)
// and, for an upload of more than one chunk, reads it back and uploads
// again (at most maxUploads times in all) if it does not hash to the
// reference (see readback.go), before it returns. Those reads back and
// uploads share one transfer deadline (Options.TransferRate): the bound of
// a Put is that of one upload, plus RequestTimeout per metadata request.
//
// When an upload fails (the bucket or the server's disk is full, the
// connection dropped, ctx ended), Put removes the metadata it may have left
// naming missing chunks, if it is still the latest (see dropIncomplete), so
// the failed Put leaves nothing under the reference, and returns an error
// wrapping the cause. Retrying is always safe. ctx bounds the reading of r
// and the upload.
func (s *Store) Put(ctx context.Context, r io.Reader) (string, error) {
	if s.isClosed() {
		return "", fmt.Errorf("natsobject: put: %w", ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("natsobject: put: %w", err)
	}
	if err := s.ready(ctx); err != nil {
		return "", fmt.Errorf("natsobject: put: %w", err)
	}
	f, err := os.CreateTemp(s.opts.SpoolDir, "natsobject-put-*")
	if err != nil {
		return "", fmt.Errorf("natsobject: put: spool: %w", err)
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	h := controlevent.NewHash()
	n, err := io.Copy(io.MultiWriter(f, h), ctxReader{ctx, r})
	if err != nil {
		return "", fmt.Errorf("natsobject: put: spool to %s after %d bytes: %w", f.Name(), n, err)
	}
	ref := controlevent.ChecksumOf(h)
	size := uint64(n)

	unlock := s.lock(ref)
	defer unlock()
	in, err := s.inspect(ctx, ref, &size)
	if err != nil {
		return "", fmt.Errorf("natsobject: put %s: check the object in bucket %q: %w", ref, s.bucket, err)
	}
	// One transfer deadline (see Options.TransferRate) bounds every read
	// back and upload of this Put together, so that checking what nats.go
	// stored does not extend the bound a caller was promised.
	tctx, cancel := s.transferCtx(ctx, size)
	defer cancel()
	switch in.state {
	case objComplete:
		// Chunks counted are not chunks that hash to ref (see readback.go):
		// read the object back, so that Putting the content again repairs
		// an object every Get reports corrupt.
		p, err := s.confirmStored(tctx, ref, size, in.info)
		if err != nil {
			return "", fmt.Errorf("natsobject: put %s: read back the object in bucket %q (%s; retry the Put): %w", ref, s.bucket, s.brokerState(), err)
		}
		if p == "" {
			return ref, nil
		}
		s.opts.Logger.Warn("natsobject: put: replacing a damaged object", "ref", ref, "bucket", s.bucket, "problem", p)
	case objDamaged:
		s.opts.Logger.Warn("natsobject: put: replacing a damaged object", "ref", ref, "bucket", s.bucket, "problem", in.problem)
	}
	for attempt := 1; ; attempt++ {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return "", fmt.Errorf("natsobject: put %s: rewind spool %s: %w", ref, f.Name(), err)
		}
		info, err := s.upload(ctx, tctx, ref, size, f)
		if err != nil {
			return "", err
		}
		if info.Chunks <= 1 {
			return ref, nil
		}
		p, err := s.confirmStored(tctx, ref, size, info)
		if err != nil {
			return "", fmt.Errorf("natsobject: put %s: read back the upload to bucket %q (%s; retry the Put): %w", ref, s.bucket, s.brokerState(), err)
		}
		if p == "" {
			return ref, nil
		}
		if attempt == maxUploads {
			return "", fmt.Errorf("natsobject: put %s: bucket %q: %d uploads reported success and none reads back whole (%s); check the servers' logs and retry the Put", ref, s.bucket, attempt, p)
		}
		s.opts.Logger.Warn(MsgReupload,
			"ref", ref, "bucket", s.bucket, "attempt", attempt, "problem", p)
	}
}

// upload uploads the content of f (size bytes that hash to ref) under ref
// within uctx, the Put's transfer deadline (jetstream's Put waits for
// every chunk's ack with no bound of its own when its context has none),
// and checks that the bucket holds all the chunks of the upload
// (checkUpload), returning the upload's metadata. A failed upload's
// leftovers are removed (dropIncomplete, on ctx, the caller's).
func (s *Store) upload(ctx, uctx context.Context, ref string, size uint64, f *os.File) (*jetstream.ObjectInfo, error) {
	info, err := s.obs.Put(uctx, jetstream.ObjectMeta{Name: ref}, uploadReader(ctxReader{uctx, f}))
	if err != nil {
		s.dropIncomplete(ctx, ref)
		if cerr := uctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w (%v)", cerr, err)
		}
		return nil, fmt.Errorf("natsobject: put %s: upload %d bytes to bucket %q (%s; the broker did not answer in time or failed; retry the Put): %w",
			ref, size, s.bucket, s.brokerState(), err)
	}
	if info.Size != size {
		return nil, fmt.Errorf("natsobject: put %s: bucket %q stored %d bytes, want %d", ref, s.bucket, info.Size, size)
	}
	info, err = s.checkUpload(ctx, ref, size, info)
	if err != nil {
		return nil, fmt.Errorf("natsobject: put %s: bucket %q after the upload: %w", ref, s.bucket, err)
	}
	return info, nil
}

// checkUpload checks that the bucket holds every chunk of the upload info,
// which Put has just stored for ref. It counts the chunks of that upload
// directly, without reading the metadata back (a direct get of the
// metadata right after an upload costs the server as much as the upload
// itself). Only if chunks are missing, which a concurrent Put of the same
// content from another process causes when it replaces the object, does it
// inspect whatever the bucket holds under ref now. It returns the metadata
// of the object found complete: info, or the other process's.
func (s *Store) checkUpload(ctx context.Context, ref string, size uint64, info *jetstream.ObjectInfo) (*jetstream.ObjectInfo, error) {
	if p := metaProblem(info, ref, &size); p == "" {
		if info.Chunks == 0 {
			return info, nil
		}
		have, err := s.chunkCount(ctx, info.NUID)
		if err != nil {
			return nil, err
		}
		if have == uint64(info.Chunks) {
			return info, nil
		}
	}
	in, err := s.inspect(ctx, ref, &size)
	if err != nil {
		return nil, err
	}
	if in.state != objComplete {
		return nil, fmt.Errorf("the complete object is not there (%s); retry the Put", in.problem)
	}
	return in.info, nil
}
