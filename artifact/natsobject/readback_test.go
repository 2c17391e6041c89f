package natsobject_test

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/natsobject"
	"github.com/controlfeed/controlfeed/internal/natsembed"
)

// leaderlessOnce returns an upload reader wrapper that makes the bucket's
// stream stop listening on its chunk subjects while the first chunk of the
// first upload it wraps is published (the publish gets "no responders",
// as during a leader election on a cluster), and listen again before the
// second chunk is read. nats.go retries the first chunk 250 ms later.
func leaderlessOnce(t *testing.T, js jetstream.JetStream, bucket string) func(io.Reader) io.Reader {
	t.Helper()
	ctx := t.Context()
	setChunks := func(on bool) {
		st, err := js.Stream(ctx, "OBJ_"+bucket)
		if err != nil {
			t.Error(err)
			return
		}
		cfg := st.CachedInfo().Config
		cfg.Subjects = []string{"$O." + bucket + ".M.>"}
		if on {
			cfg.Subjects = append(cfg.Subjects, "$O."+bucket+".C.>")
		}
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			t.Error(err)
		}
	}
	var once sync.Once
	return func(r io.Reader) io.Reader {
		hit := false
		once.Do(func() { hit = true })
		if !hit {
			return r
		}
		calls := 0
		return readFunc(func(p []byte) (int, error) {
			calls++
			switch calls {
			case 1:
				setChunks(false)
			case 2:
				time.Sleep(50 * time.Millisecond) // the first chunk's 503 arrives
				setChunks(true)
			}
			return r.Read(p)
		})
	}
}

type readFunc func([]byte) (int, error)

func (f readFunc) Read(p []byte) (int, error) { return f(p) }

// threeChunks is content of three 128 KiB chunks, each different.
func threeChunks() []byte {
	b := make([]byte, 3*128*1024)
	for i := range b {
		b[i] = byte(i/(128*1024)) + 'a'
	}
	return b
}

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A multi-chunk upload during which the stream loses its leader for a
// moment ends, in nats.go's Put, with a success and a bucket holding the
// right number of chunks over other bytes (see readback.go). Put must read
// the upload back, upload again, and return the reference only when the
// object reads back whole.
func TestPut_ChunkRetryIsReadBack(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	h := newHarness(ctx, t, srv)
	var log logBuf
	s, err := natsobject.New(ctx, h.cfg, &natsobject.Options{SpoolDir: h.spool, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, js := rawJS(t, srv)
	defer natsobject.SetUploadReader(leaderlessOnce(t, js, h.cfg.Bucket))()

	data := threeChunks()
	ref, err := s.Put(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	raw, err := h.raw(ctx, t).GetBytes(ctx, ref)
	if err != nil || !bytes.Equal(raw, data) {
		t.Fatalf("nats.go's Get after Put returned the reference: %d bytes, %v", len(raw), err)
	}
	if !strings.Contains(log.String(), natsobject.MsgReupload) {
		t.Fatalf("the first upload read back whole, so the injected fault did not damage it "+
			"(has nats.go stopped resending a reused chunk buffer? then readback.go can go); log:\n%s", log.String())
	}
	got, err := artifact.GetBytes(ctx, s, ref, 1<<20)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get after Put: %d bytes, %v", len(got), err)
	}
}

// An object damaged that way before (by another writer, or by a version of
// Put that only counted chunks) fails every Get; Putting the content again
// repairs it.
func TestPut_RepairsObjectThatDoesNotReadBack(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	h := newHarness(ctx, t, srv)
	s := h.Open(ctx, t).(*natsobject.Store)
	defer s.Close()
	data := threeChunks()
	ref := artifact.RefOf(data)

	// The damaged object, written by nats.go's Put itself under the fault.
	_, js := rawJS(t, srv)
	obs := h.raw(ctx, t)
	if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: ref}, leaderlessOnce(t, js, h.cfg.Bucket)(bytes.NewReader(data))); err != nil {
		t.Fatalf("nats.go Put: %v", err)
	}
	before, err := obs.GetInfo(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	// Get reports it as a failure to retry, never as content that does not
	// hash to its reference (artifact.ErrCorrupt halts a node): Putting the
	// content again repairs it, and the retrying node goes on.
	_, err = artifact.GetBytes(ctx, s, ref, 1<<20)
	if err == nil {
		t.Fatal("Get of the damaged object succeeded: the fault did not damage it")
	}
	if errors.Is(err, artifact.ErrCorrupt) || !errors.Is(err, jetstream.ErrDigestMismatch) {
		t.Fatalf("Get of the damaged object: %v; want the Object Store's digest mismatch, not artifact.ErrCorrupt", err)
	}

	if _, err := s.Put(ctx, bytes.NewReader(data)); err != nil {
		t.Fatalf("Put of the content again: %v", err)
	}
	after, err := obs.GetInfo(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if after.NUID == before.NUID {
		t.Fatalf("Put found the damaged object (upload %s) complete and did not upload again", before.NUID)
	}
	got, err := artifact.GetBytes(ctx, s, ref, 1<<20)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get after the repairing Put: %d bytes, %v", len(got), err)
	}
	// Whole now: a third Put reads it back and uploads nothing.
	if _, err := s.Put(ctx, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if again, _ := obs.GetInfo(ctx, ref); again == nil || again.NUID != after.NUID {
		t.Fatalf("Put of a whole object uploaded it again")
	}
}

// A one-chunk object whose chunk holds other bytes (the right count, and
// metadata whose digest is the reference's) fails Get with the digest
// mismatch, a failure to retry, never artifact.ErrCorrupt; Putting the
// content again repairs it.
func TestGet_OneChunkDamaged(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	h := newHarness(ctx, t, srv)
	s := h.Open(ctx, t).(*natsobject.Store)
	defer s.Close()
	data := []byte("one chunk, read with one direct get")
	ref, err := artifact.PutBytes(ctx, s, data)
	if err != nil {
		t.Fatal(err)
	}
	info, err := h.raw(ctx, t).GetInfo(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	_, js := rawJS(t, srv)
	subj := "$O." + h.cfg.Bucket + ".C." + info.NUID
	if err := h.stream(ctx, t).Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, subj, []byte("ONE CHUNK, read with one direct get")); err != nil {
		t.Fatal(err)
	}
	_, err = artifact.GetBytes(ctx, s, ref, 1<<20)
	if err == nil || errors.Is(err, artifact.ErrCorrupt) || !errors.Is(err, jetstream.ErrDigestMismatch) {
		t.Fatalf("Get of the damaged object: %v; want the Object Store's digest mismatch, not artifact.ErrCorrupt", err)
	}
	if _, err := artifact.PutBytes(ctx, s, data); err != nil {
		t.Fatalf("Put of the content again: %v", err)
	}
	if got, err := artifact.GetBytes(ctx, s, ref, 1<<20); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get after the repairing Put: %q, %v", got, err)
	}
}
