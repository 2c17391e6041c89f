package natsobject_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"

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
		cfg:   artifact.NATSConfig{URLs: []string{srv.ClientURL()}, Bucket: fmt.Sprintf("b%d", bucketSeq.Add(1))},
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
	s, err := artifact.Open(natsobject.Name, artifact.Config{NATS: artifact.NATSConfig{URLs: []string{srv.ClientURL()}}})
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
