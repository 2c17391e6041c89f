package natsobject

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/controlevent"
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

// storedProblem reads back the chunks that metadata info names, in stream
// order, and says what is wrong with them for object ref: "" if they are
// exactly info.Chunks chunks of info.Size bytes in all that hash to ref.
// The reads are direct gets (any replica answers; a chunk a lagging
// replica reports missing is asked for again for up to lagPatience),
// bounded by the transfer deadline of info.Size. The error is reserved for
// reads that failed.
func (s *Store) storedProblem(ctx context.Context, ref string, info *jetstream.ObjectInfo) (string, error) {
	want, err := hex.DecodeString(strings.TrimPrefix(ref, controlevent.ChecksumPrefix))
	if err != nil {
		return "malformed reference", nil
	}
	if info.Chunks == 0 {
		return "", nil
	}
	ctx, cancel := s.transferCtx(ctx, info.Size)
	defer cancel()
	h := controlevent.NewHash()
	subj := chunkSubject(s.bucket, info.NUID)
	var chunks, size uint64
	for seq := uint64(1); ; {
		msg, err := s.nextChunk(ctx, subj, seq, chunks < uint64(info.Chunks))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("read back chunk %d of upload %s: %w", chunks+1, info.NUID, err)
		}
		chunks++
		size += uint64(len(msg.Data))
		h.Write(msg.Data)
		if chunks > uint64(info.Chunks) {
			break
		}
		seq = msg.Sequence + 1
	}
	switch {
	case chunks != uint64(info.Chunks):
		return fmt.Sprintf("%d chunks read back from upload %s, its metadata names %d", chunks, info.NUID, info.Chunks), nil
	case size != info.Size:
		return fmt.Sprintf("its chunks read back hold %d bytes, its metadata says %d", size, info.Size), nil
	case !bytes.Equal(h.Sum(nil), want):
		return fmt.Sprintf("its %d chunks read back (upload %s) do not hash to the reference", chunks, info.NUID), nil
	}
	return "", nil
}

// nextChunk reads the first message at or after seq on subj, bounded by
// RequestTimeout. If expected, a "not found" is asked again every 50 ms
// for up to lagPatience (a lagging replica answered) before it is
// returned.
func (s *Store) nextChunk(ctx context.Context, subj string, seq uint64, expected bool) (*jetstream.RawStreamMsg, error) {
	end := time.Now().Add(min(lagPatience, s.opts.RequestTimeout))
	for {
		rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
		msg, err := s.stream.GetMsg(rctx, seq, jetstream.WithGetMsgSubject(subj))
		cancel()
		if !errors.Is(err, jetstream.ErrMsgNotFound) || !expected || time.Now().After(end) {
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

// uploadReader wraps the reader of every upload; tests set it (see
// export_test.go) to inject broker faults between chunks.
var uploadReader = func(r io.Reader) io.Reader { return r }
