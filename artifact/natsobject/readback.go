package natsobject

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Why Put reads an object back.
//
// nats.go's Object Store Put (v1.55, v1.56) publishes every chunk of an
// upload with one reused *nats.Msg whose Data points into one reused
// buffer, asynchronously, and retries a publish that gets "no responders"
// (the stream has no leader for a moment: a leader election on a cluster)
// 250 ms later by sending that message again. By then the message carries
// a later chunk's bytes, sent after the chunks that followed it: the
// bucket ends up with the right number of chunks and metadata whose digest
// is the content's, over other bytes, and Put reports success. Counting
// chunks cannot see it; every Get of the object then fails with the
// Object Store's digest mismatch, for good. A single-chunk upload is not
// exposed (its buffer is not reused), a multi-chunk one is. So Put reads
// back every multi-chunk upload, and every object it finds already in the
// bucket, before it returns the reference, and uploads again what does not
// hash to it (see storedProblem). TestPut_ChunkRetryIsReadBack reproduces
// the loss on one server.

// maxUploads is how many times one Put uploads content whose read-back
// does not hash to its reference before it fails.
const maxUploads = 3

// confirmStored reads back the object whose metadata is info (see
// storedProblem) and returns "" if it hashes to ref, or what is wrong with
// it: content to upload again. Chunks that cannot be read at all are not
// taken for damage at once: another process's Put of the same content may
// have replaced the upload (purging its chunks), whose object is then read
// back in turn, and if the stream's leader still counts every chunk of the
// upload the replicas that answered lag, which is an error (retry the Put),
// never a reason to upload over a whole object.
func (s *Store) confirmStored(ctx context.Context, ref string, size uint64, info *jetstream.ObjectInfo) (string, error) {
	for range maxUploads {
		p, short, err := s.storedProblem(ctx, ref, info)
		if err != nil || !short {
			return p, err
		}
		in, err := s.inspect(ctx, ref, &size)
		if err != nil {
			return "", err
		}
		if in.state != objComplete {
			return in.problem, nil
		}
		if in.info.NUID == info.NUID {
			return "", fmt.Errorf("%s, while the stream's leader holds them all (the replicas that answered lag)", p)
		}
		info = in.info // replaced meanwhile: read back the new upload
	}
	return "", fmt.Errorf("the object under the reference was replaced %d times while Put read it back (other processes Put the same content)", maxUploads)
}

// storedProblem reads back the chunks that metadata info names, in stream
// order, through the reader Get uses (chunkReader), and says what is wrong
// with them: "" if those info.Chunks chunks hold info.Size bytes in all
// that match info's digest, which is ref's (metaProblem checked it for an
// object found in the bucket; an upload's is that of the content it read).
// short reports that fewer chunks than that could be read (not found after
// lagPatience each). The reads are direct gets (any replica answers),
// bounded together by the transfer deadline of info.Size; the error is
// reserved for reads that failed. The chunk count itself is the caller's
// to check (inspect, checkUpload): a chunk past the count is not looked
// for.
func (s *Store) storedProblem(ctx context.Context, ref string, info *jetstream.ObjectInfo) (problem string, short bool, err error) {
	ctx, cancel := s.transferCtx(ctx, info.Size)
	defer cancel()
	cr := s.newChunkReader(ctx, ref, info)
	_, err = io.Copy(io.Discard, cr)
	switch {
	case err == nil:
		return "", false, nil
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return cr.problem, true, nil
	case errors.Is(err, jetstream.ErrDigestMismatch):
		return cr.problem, false, nil
	}
	return "", false, fmt.Errorf("read back upload %s: %w", info.NUID, err)
}

// nextChunk reads the first message at or after seq on subj, bounded by
// RequestTimeout. The caller knows the message is there (the stream's
// leader counted it), so a "not found" is asked again every 50 ms for up
// to lagPatience (a lagging replica answered) before it is returned.
func (s *Store) nextChunk(ctx context.Context, subj string, seq uint64) (*jetstream.RawStreamMsg, error) {
	end := time.Now().Add(min(lagPatience, s.opts.RequestTimeout))
	for {
		rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
		msg, err := s.stream.GetMsg(rctx, seq, jetstream.WithGetMsgSubject(subj))
		cancel()
		if !errors.Is(err, jetstream.ErrMsgNotFound) || time.Now().After(end) {
			return msg, err
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// sleepCtx sleeps for d or until ctx ends, whose error it returns then.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Test hooks (see export_test.go): uploadReader wraps the reader of every
// upload, to inject broker faults between chunks; beforeTransfer runs in
// Get once the object is found readable, before its chunks are asked for.
var (
	uploadReader   = func(r io.Reader) io.Reader { return r }
	beforeTransfer = func() {}
)
