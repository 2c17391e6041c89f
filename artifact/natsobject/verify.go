package natsobject

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/controlevent"
)

// The Object Store's layout on its stream, as NATS ADR-20 specifies it and
// nats.go implements it without exporting the names: stream OBJ_<bucket>,
// one metadata message per object on $O.<bucket>.M.<base64url(name)>, the
// chunks of one upload on $O.<bucket>.C.<nuid>.
func streamName(bucket string) string { return "OBJ_" + bucket }

func chunkSubject(bucket, nuid string) string { return "$O." + bucket + ".C." + nuid }

func metaSubject(bucket, name string) string {
	return "$O." + bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(name))
}

// objState is what the bucket holds under a reference.
type objState int

const (
	objAbsent   objState = iota // no metadata, or a deletion marker
	objComplete                 // metadata that fits the reference, and all its chunks
	objDamaged                  // metadata that does not fit, or chunks missing
)

func (s objState) String() string {
	switch s {
	case objAbsent:
		return "absent"
	case objComplete:
		return "complete"
	case objDamaged:
		return "damaged"
	}
	return fmt.Sprintf("objState(%d)", int(s))
}

// inspection is the result of inspect.
type inspection struct {
	state   objState
	problem string                // why it is not complete
	info    *jetstream.ObjectInfo // the metadata, unless absent
}

// inspect reports whether the bucket holds object ref complete: metadata
// that is not a link, whose digest is ref's and, when size is not nil,
// whose size is *size, and every chunk that metadata names. It costs two
// requests (the metadata, the chunk count of the upload it names), each
// bounded by RequestTimeout; the error is reserved for a request that
// failed. Chunks found missing are confirmed by reading the metadata again:
// a concurrent Put that replaced the object purges the old chunks after
// storing the new metadata, and is then inspected in its turn.
func (s *Store) inspect(ctx context.Context, ref string, size *uint64) (inspection, error) {
	info, err := s.getInfo(ctx, ref)
	for attempt := 1; ; attempt++ {
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return inspection{state: objAbsent, problem: "no object under the reference"}, nil
		}
		if err != nil {
			return inspection{}, err
		}
		if p := metaProblem(info, ref, size); p != "" {
			return inspection{state: objDamaged, problem: p, info: info}, nil
		}
		if info.Chunks == 0 {
			return inspection{state: objComplete, info: info}, nil
		}
		have, cerr := s.chunkCount(ctx, info.NUID)
		if cerr != nil {
			return inspection{}, cerr
		}
		if have == uint64(info.Chunks) {
			return inspection{state: objComplete, info: info}, nil
		}
		problem := fmt.Sprintf("%d of the %d chunks of its metadata are in the bucket", have, info.Chunks)
		var again *jetstream.ObjectInfo
		again, err = s.getInfo(ctx, ref)
		if err == nil && (again.NUID == info.NUID || attempt == 3) {
			return inspection{state: objDamaged, problem: problem, info: info}, nil
		}
		info = again
	}
}

// metaProblem says what is wrong with metadata info for object ref of the
// given size (nil: unknown), or "" if nothing is.
func metaProblem(info *jetstream.ObjectInfo, ref string, size *uint64) string {
	if info.Opts != nil && info.Opts.Link != nil {
		return "it is a link, not an object"
	}
	if info.NUID == "" {
		return "its metadata names no upload"
	}
	if size != nil && info.Size != *size {
		return fmt.Sprintf("its metadata says %d bytes, the content has %d", info.Size, *size)
	}
	if (info.Size == 0) != (info.Chunks == 0) {
		return fmt.Sprintf("its metadata says %d bytes in %d chunks", info.Size, info.Chunks)
	}
	want, err := hex.DecodeString(strings.TrimPrefix(ref, controlevent.ChecksumPrefix))
	if err != nil {
		return "malformed reference" // callers check refs first
	}
	got, err := jetstream.DecodeObjectDigest(info.Digest)
	if err != nil {
		return fmt.Sprintf("its metadata digest %q is unreadable", info.Digest)
	}
	if !bytes.Equal(got, want) {
		return fmt.Sprintf("its metadata digest %s is not the reference's", info.Digest)
	}
	return ""
}

// getInfo reads the metadata of ref, bounded by RequestTimeout.
func (s *Store) getInfo(ctx context.Context, ref string) (*jetstream.ObjectInfo, error) {
	rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	info, err := s.obs.GetInfo(rctx, ref)
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("object info: %w", err)
	}
	return info, err
}

// chunkCount returns how many chunks of upload nuid the bucket holds, from
// the stream's per-subject message count, bounded by RequestTimeout.
func (s *Store) chunkCount(ctx context.Context, nuid string) (uint64, error) {
	rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	subj := chunkSubject(s.bucket, nuid)
	si, err := s.stream.Info(rctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return 0, fmt.Errorf("count chunks on %s: %w", subj, err)
	}
	return si.State.Subjects[subj], nil
}

// readable returns the metadata of ref if the bucket holds it complete, an
// error wrapping artifact.ErrNotFound if it holds nothing under ref, and
// one wrapping artifact.ErrCorrupt if it holds metadata whose chunks are
// missing or that describes other content.
func (s *Store) readable(ctx context.Context, ref string) (*jetstream.ObjectInfo, error) {
	in, err := s.inspect(ctx, ref, nil)
	switch {
	case err != nil:
		return nil, fmt.Errorf("natsobject: get %s from bucket %q: %w", ref, s.bucket, err)
	case in.state == objAbsent:
		return nil, fmt.Errorf("natsobject: get %s from bucket %q: %w", ref, s.bucket, artifact.ErrNotFound)
	case in.state == objDamaged:
		return nil, fmt.Errorf("natsobject: get %s from bucket %q: %s (a failed upload or a damaged bucket; Put the content again to repair it): %w", ref, s.bucket, in.problem, artifact.ErrCorrupt)
	}
	return in.info, nil
}

// cleanupGrace is how long past its caller's deadline a failed Put may
// spend removing what the upload left (dropIncomplete).
const cleanupGrace = 500 * time.Millisecond

// dropIncomplete removes the metadata of ref if it names chunks that are
// not all in the bucket, which is what a failed upload leaves: nats.go
// purges the chunks it published, but the metadata message may be stored
// already. The failed Put then leaves nothing under ref, rather than an
// object that cannot be read. The deletion marker is published only if the
// metadata is still the message inspected (the stream's expected last
// sequence per subject), so it never removes an object another process has
// just uploaded complete. Since ctx may be what ended the upload, it works
// on its own deadline: what is left of ctx's plus cleanupGrace, at most
// RequestTimeout, so that a Put never outlasts its caller's deadline by
// more than cleanupGrace (without a deadline on ctx: RequestTimeout). Best
// effort: a failure is logged, and the next Put of the content replaces the
// metadata anyway.
func (s *Store) dropIncomplete(ctx context.Context, ref string) {
	limit := s.opts.RequestTimeout
	if dl, ok := ctx.Deadline(); ok {
		limit = min(limit, max(time.Until(dl), 0)+cleanupGrace)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), limit)
	defer cancel()
	log := s.opts.Logger.With("ref", ref, "bucket", s.bucket)
	subj := metaSubject(s.bucket, ref)
	msg, err := s.stream.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return
	}
	if err != nil {
		log.Warn("natsobject: put: read metadata after a failed upload", "err", err)
		return
	}
	var info jetstream.ObjectInfo
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		log.Warn("natsobject: put: decode metadata after a failed upload", "err", err)
		return
	}
	if info.Deleted || info.Chunks == 0 {
		return
	}
	have, err := s.chunkCount(ctx, info.NUID)
	if err != nil {
		log.Warn("natsobject: put: after a failed upload", "err", err)
		return
	}
	if have == uint64(info.Chunks) {
		return // complete: another upload's, or this one's despite the error
	}
	nuid := info.NUID
	info.Deleted = true
	info.Size, info.Chunks, info.Digest = 0, 0, ""
	info.ModTime = time.Time{}
	data, err := json.Marshal(&info)
	if err != nil {
		log.Warn("natsobject: put: encode deletion marker", "err", err)
		return
	}
	m := nats.NewMsg(subj)
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	m.Data = data
	if _, err := s.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(msg.Sequence)); err != nil {
		log.Warn("natsobject: put: remove the metadata a failed upload left (the next Put replaces it)", "err", err)
		return
	}
	if err := s.stream.Purge(ctx, jetstream.WithPurgeSubject(chunkSubject(s.bucket, nuid))); err != nil {
		log.Warn("natsobject: put: purge the chunks of a failed upload", "nuid", nuid, "err", err)
	}
	log.Info("natsobject: put: removed the metadata a failed upload left", "nuid", nuid, "chunks_present", have)
}

// A bucket's stream allows direct gets: any replica answers a metadata
// read, and a replica that is behind (restarted, or catching up after a
// leader change) reports an object missing that the producer stored and
// published moments ago. A node must not halt on that: Get confirms every
// "missing" with the stream's leader, which alone answers the plain
// message-get API, and waits for the replicas while the leader holds the
// object.

// lagPatience is how long Get re-reads an object that the bucket's leader
// holds and the replica that answered did not, before it reports the lag
// as a transient error (at most RequestTimeout).
const lagPatience = 2 * time.Second

// leaderHas reports whether the bucket stream's leader holds live
// metadata for ref (not a deletion marker), bounded by RequestTimeout.
func (s *Store) leaderHas(ctx context.Context, ref string) (bool, error) {
	rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	req, err := json.Marshal(map[string]string{"last_by_subj": metaSubject(s.bucket, ref)})
	if err != nil {
		return false, err
	}
	subj := "$JS.API.STREAM.MSG.GET." + streamName(s.bucket)
	msg, err := s.nc.RequestWithContext(rctx, subj, req)
	if err != nil {
		return false, fmt.Errorf("ask the leader of %s for %s: %w", streamName(s.bucket), ref, err)
	}
	var resp struct {
		Error *struct {
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
		Message *struct {
			Data []byte `json:"data"`
		} `json:"message"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return false, fmt.Errorf("ask the leader of %s for %s: unreadable answer: %w", streamName(s.bucket), ref, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == int(jetstream.JSErrCodeMessageNotFound):
		return false, nil
	case resp.Error != nil:
		return false, fmt.Errorf("ask the leader of %s for %s: %s (error %d)", streamName(s.bucket), ref, resp.Error.Description, resp.Error.ErrCode)
	case resp.Message == nil:
		return false, fmt.Errorf("ask the leader of %s for %s: an answer without a message", streamName(s.bucket), ref)
	}
	var info jetstream.ObjectInfo
	if err := json.Unmarshal(resp.Message.Data, &info); err != nil {
		return true, nil // metadata that is there but unreadable: inspect reports it
	}
	return !info.Deleted, nil
}

// confirmAbsent is called when readable found nothing under ref (notFound
// is its error): it returns notFound if the bucket's leader holds nothing
// either; if the leader holds the object it reads again for up to
// lagPatience and returns what readable returns then, or a transient
// error (never artifact.ErrNotFound) if the replicas still lag; if the
// leader does not answer, a transient error too: absence is not confirmed.
func (s *Store) confirmAbsent(ctx context.Context, ref string, notFound error) (*jetstream.ObjectInfo, error) {
	has, err := s.leaderHas(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("natsobject: get %s from bucket %q: a replica reported it missing and the leader could not confirm it (%s; retry the Get): %w",
			ref, s.bucket, s.brokerState(), err)
	}
	if !has {
		return nil, notFound
	}
	end := time.Now().Add(min(lagPatience, s.opts.RequestTimeout))
	for {
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("natsobject: get %s from bucket %q: waiting for a lagging replica: %w", ref, s.bucket, ctx.Err())
		case <-t.C:
		}
		info, err := s.readable(ctx, ref)
		if !errors.Is(err, artifact.ErrNotFound) {
			return info, err
		}
		if time.Now().After(end) {
			return nil, fmt.Errorf("natsobject: get %s from bucket %q: the bucket's leader holds it, the replicas that answered do not yet "+
				"(replication lag after a restart or a leader change; retry the Get)", ref, s.bucket)
		}
	}
}
