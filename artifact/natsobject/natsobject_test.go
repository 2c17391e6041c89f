package natsobject_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/artifacttest"
	"github.com/controlfeed/controlfeed/artifact/natsobject"
	"github.com/controlfeed/controlfeed/internal/natsembed"
)

var bucketSeq atomic.Int64

type harness struct {
	srv   *natsembed.Server
	cfg   artifact.NATSConfig
	spool string
}

func newHarness(ctx context.Context, t testing.TB, srv *natsembed.Server) *harness {
	t.Helper()
	h := &harness{
		srv:   srv,
		cfg:   artifact.NATSConfig{URLs: []string{srv.ClientURL()}, Bucket: fmt.Sprintf("b%d", bucketSeq.Add(1)), Create: true},
		spool: t.TempDir(),
	}
	return h
}

func (h *harness) Open(ctx context.Context, t *testing.T) artifact.Store {
	t.Helper()
	s, err := natsobject.New(ctx, h.cfg, &natsobject.Options{SpoolDir: h.spool})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func (h *harness) raw(ctx context.Context, t testing.TB) jetstream.ObjectStore {
	t.Helper()
	nc, err := nats.Connect(h.srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	obs, err := js.ObjectStore(ctx, h.cfg.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	return obs
}

func (h *harness) Corrupt(ctx context.Context, t *testing.T, ref string) {
	t.Helper()
	obs := h.raw(ctx, t)
	b, err := obs.GetBytes(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if _, err := obs.PutBytes(ctx, ref, b); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) Remove(ctx context.Context, t *testing.T, ref string) {
	t.Helper()
	if err := h.raw(ctx, t).Delete(ctx, ref); err != nil {
		t.Fatal(err)
	}
}

// MakeIncomplete purges the object's chunks and keeps its metadata, which
// is what nats.go leaves when an upload fails: it purges the chunks it
// published, but the metadata message has been stored already.
func (h *harness) MakeIncomplete(ctx context.Context, t *testing.T, ref string) {
	t.Helper()
	info, err := h.raw(ctx, t).GetInfo(ctx, ref)
	if err != nil {
		t.Fatalf("MakeIncomplete %s: %v", ref, err)
	}
	if err := h.stream(ctx, t).Purge(ctx, jetstream.WithPurgeSubject(fmt.Sprintf("$O.%s.C.%s", h.cfg.Bucket, info.NUID))); err != nil {
		t.Fatalf("MakeIncomplete %s: purge chunks: %v", ref, err)
	}
}

// SetQuota sets the bucket's byte limit (MaxBytes), as an operator does on
// a bucket they create; a negative max removes it.
func (h *harness) SetQuota(ctx context.Context, t *testing.T, max int64) {
	t.Helper()
	nc, err := nats.Connect(h.srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if max < 0 {
		max = -1
	}
	if _, err := js.UpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket: h.cfg.Bucket, Storage: jetstream.FileStorage, Replicas: 1, MaxBytes: max,
	}); err != nil {
		t.Fatalf("SetQuota(%d): %v", max, err)
	}
}

// stream returns the bucket's underlying stream.
func (h *harness) stream(ctx context.Context, t testing.TB) jetstream.Stream {
	t.Helper()
	nc, err := nats.Connect(h.srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	st, err := js.Stream(ctx, "OBJ_"+h.cfg.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestConformance(t *testing.T) {
	srv := natsembed.StartForTest(t)
	artifacttest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) artifacttest.Harness {
		h := newHarness(ctx, t, srv)
		t.Cleanup(func() {
			// No spool file outlives a Put, whatever happened to it.
			if ents, _ := os.ReadDir(h.spool); len(ents) != 0 {
				t.Errorf("spool directory holds %d files after the test", len(ents))
			}
		})
		return h
	})
}

func TestPut_IdempotentNoReupload(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	h := newHarness(ctx, t, srv)
	s := h.Open(ctx, t).(*natsobject.Store)
	defer s.Close()
	b := bytes.Repeat([]byte("snapshot "), 50_000)
	ref, err := artifact.PutBytes(ctx, s, b)
	if err != nil {
		t.Fatal(err)
	}
	info1, err := h.raw(ctx, t).GetInfo(ctx, ref)
	if err != nil {
		t.Fatalf("object not stored under its reference: %v", err)
	}
	ref2, err := artifact.PutBytes(ctx, s, b)
	if err != nil || ref2 != ref {
		t.Fatalf("second Put: %s, %v", ref2, err)
	}
	info2, _ := h.raw(ctx, t).GetInfo(ctx, ref)
	if info2.NUID != info1.NUID {
		t.Fatalf("second Put uploaded again (NUID %s -> %s)", info1.NUID, info2.NUID)
	}
	// A removed object is uploaded again.
	h.Remove(ctx, t, ref)
	if _, err := artifact.PutBytes(ctx, s, b); err != nil {
		t.Fatal(err)
	}
	got, err := artifact.GetBytes(ctx, s, ref, 1<<20)
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("GetBytes after re-Put: %d bytes, %v", len(got), err)
	}
}

func TestRegisteredAndClose(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	s, err := artifact.Open(natsobject.Name, artifact.Config{NATS: artifact.NATSConfig{URLs: []string{srv.ClientURL()}, Create: true}})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.(*natsobject.Store).Bucket(); got != natsobject.DefaultBucket {
		t.Fatalf("bucket %q, want the default %q", got, natsobject.DefaultBucket)
	}
	ref, err := artifact.PutBytes(ctx, s, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.(artifact.Closer).Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.(artifact.Closer).Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Get(ctx, ref); !errors.Is(err, natsobject.ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
	if _, err := artifact.PutBytes(ctx, s, []byte("y")); !errors.Is(err, natsobject.ErrClosed) {
		t.Fatalf("Put after Close: %v", err)
	}
}

func TestServerRestart(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	h := newHarness(ctx, t, srv)
	s := h.Open(ctx, t).(*natsobject.Store)
	defer s.Close()
	ref, err := artifact.PutBytes(ctx, s, []byte("survives"))
	if err != nil {
		t.Fatal(err)
	}
	natsembed.RestartForTest(t, srv)
	for {
		got, err := artifact.GetBytes(ctx, s, ref, 100)
		if err == nil {
			if string(got) != "survives" {
				t.Fatalf("got %q", got)
			}
			return
		}
		if ctx.Err() != nil {
			t.Fatal(err)
		}
	}
}

// TestPut_FailedUploadLeavesNothing reproduces a full bucket: an upload
// that fails with "maximum bytes exceeded" must not leave metadata behind
// that a retry would take for the object (nats.go purges the chunks of a
// failed upload, not the metadata it may have stored already). A retry
// while the bucket is full fails; once there is room it stores the object,
// and Get then reads it whole.
func TestPut_FailedUploadLeavesNothing(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	h := newHarness(ctx, t, srv)
	s := h.Open(ctx, t).(*natsobject.Store)
	defer s.Close()
	big := bytes.Repeat([]byte("0123456789abcdef"), 256<<10) // 4 MiB, 32 chunks

	// The state a failed upload leaves, made deterministic: an object's
	// metadata whose chunks are gone, in a bucket too small for it.
	ref, err := artifact.PutBytes(ctx, s, big)
	if err != nil {
		t.Fatal(err)
	}
	h.MakeIncomplete(ctx, t, ref)
	h.SetQuota(ctx, t, 1<<20)
	for attempt := 1; attempt <= 2; attempt++ {
		if got, err := artifact.PutBytes(ctx, s, big); err == nil {
			t.Fatalf("Put #%d into a full bucket returned %s and no error", attempt, got)
		} else if !errors.Is(err, jetstream.ErrMaxBytesExceeded) && !strings.Contains(err.Error(), "maximum bytes exceeded") {
			t.Fatalf("Put #%d into a full bucket: %v, want maximum bytes exceeded", attempt, err)
		}
		info, err := h.raw(ctx, t).GetInfo(ctx, ref, jetstream.GetObjectInfoShowDeleted())
		if err != nil || !info.Deleted {
			t.Fatalf("metadata after failed Put #%d: %+v, %v; want a deletion marker", attempt, info, err)
		}
		if _, err := s.Get(ctx, ref); !errors.Is(err, artifact.ErrNotFound) {
			t.Fatalf("Get after failed Put #%d: %v, want ErrNotFound", attempt, err)
		}
	}

	// The same with fresh content, where nats.go itself may or may not
	// have stored metadata before the failure: either way nothing is left.
	for i := range 4 {
		b := bytes.Repeat([]byte{byte('a' + i)}, 3<<20)
		if got, err := artifact.PutBytes(ctx, s, b); err == nil {
			t.Fatalf("Put of 3 MiB #%d into a full bucket returned %s and no error", i, got)
		}
		if _, err := s.Get(ctx, artifact.RefOf(b)); !errors.Is(err, artifact.ErrNotFound) {
			t.Fatalf("Get after failed Put of 3 MiB #%d: %v, want ErrNotFound", i, err)
		}
	}

	h.SetQuota(ctx, t, -1)
	if got, err := artifact.PutBytes(ctx, s, big); err != nil || got != ref {
		t.Fatalf("Put after the quota was lifted: %s, %v", got, err)
	}
	if got, err := artifact.GetBytes(ctx, s, ref, 8<<20); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("GetBytes after the retry: %d bytes, %v", len(got), err)
	}
}

// TestGet_MetadataWithoutChunks: the metadata a failed upload leaves reads
// as corrupt at once, even with a Store whose timeouts are long, instead of
// waiting for chunks that will never come.
func TestGet_MetadataWithoutChunks(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	h := newHarness(ctx, t, srv)
	s, err := natsobject.New(ctx, h.cfg, &natsobject.Options{SpoolDir: h.spool, RequestTimeout: time.Hour, TransferTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b := bytes.Repeat([]byte("chunk "), 100_000)
	ref, err := artifact.PutBytes(ctx, s, b)
	if err != nil {
		t.Fatal(err)
	}
	h.MakeIncomplete(ctx, t, ref)
	gctx, cancel := context.WithTimeout(ctx, 20*time.Second) // a hang bound only
	defer cancel()
	_, err = s.Get(gctx, ref)
	if !errors.Is(err, artifact.ErrCorrupt) {
		t.Fatalf("Get of metadata without chunks: %v, want ErrCorrupt", err)
	}
	if !strings.Contains(err.Error(), "0 of the 5 chunks") {
		t.Errorf("Get's error %q does not say what is missing", err)
	}
}

// TestPut_ConcurrentStores: Stores on separate connections, like producer
// processes sharing a bucket, Put the same content at once, over a damaged
// copy; each Put may upload, replacing another's object while it is being
// checked, and every one must still succeed with one readable object.
func TestPut_ConcurrentStores(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	h := newHarness(ctx, t, srv)
	stores := make([]*natsobject.Store, 4)
	for i := range stores {
		stores[i] = h.Open(ctx, t).(*natsobject.Store)
		defer stores[i].Close()
	}
	b := bytes.Repeat([]byte("shared "), 150_000)
	ref, err := artifact.PutBytes(ctx, stores[0], b)
	if err != nil {
		t.Fatal(err)
	}
	h.MakeIncomplete(ctx, t, ref)
	errs := make(chan error, 4*len(stores))
	var wg sync.WaitGroup
	for _, s := range stores {
		for range 4 {
			wg.Go(func() {
				got, err := artifact.PutBytes(ctx, s, b)
				if err == nil && got != ref {
					err = fmt.Errorf("ref %s, want %s", got, ref)
				}
				errs <- err
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Put: %v", err)
		}
	}
	for _, s := range stores {
		if got, err := artifact.GetBytes(ctx, s, ref, 2<<20); err != nil || !bytes.Equal(got, b) {
			t.Fatalf("GetBytes after concurrent Puts: %d bytes, %v", len(got), err)
		}
	}
}
