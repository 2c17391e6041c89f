package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/internal/failpoint"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/kv"
)

// A node whose apply transactions fail because the disk is full is
// unavailable, not halted: /v1/status says so in its own field, /healthz
// turns 503 only after the grace, /metrics has controlfeed_unavailable 1 and
// controlfeed_halted 0, nothing is persisted, skip refuses, and the node
// applies by itself once the disk has room.
func TestNode_DiskFullIsUnavailable(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fcfg := feed.SourceConfig{FileDir: filepath.Join(dir, "feed")}
	sink, err := feed.OpenSink("file", fcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.(interface{ Close() error }).Close() })
	if _, err := sink.Append(ctx, controlevent.Event{EventID: "evt-1", Type: kv.TypeDelete, Key: "k", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := failpoint.Enable(failpoint.ApplierBeforeCommit + "=enospc"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(failpoint.Disable)
	const grace = 300 * time.Millisecond
	n := start(t, &node.Config{DB: filepath.Join(dir, "n.db"), FeedSource: "file", Feed: fcfg,
		Listen: "127.0.0.1:0", UnavailableGrace: grace, PollInterval: 5 * time.Millisecond})

	waitFor(t, "the node to report unavailable", func() bool { return status(t, n).Unavailable != nil })
	s := status(t, n)
	if s.State != "unavailable" || s.Halted != nil || s.Unavailable.Op != applier.OpCommit || s.Unavailable.EventID != "evt-1" ||
		!strings.Contains(s.Unavailable.Error, "no space left on device") {
		t.Fatalf("status: state %q, halted %+v, unavailable %+v", s.State, s.Halted, s.Unavailable)
	}
	_, body := get(t, n, "/v1/status")
	var js map[string]any
	if err := json.Unmarshal([]byte(body), &js); err != nil {
		t.Fatal(err)
	}
	if js["state"] != "unavailable" || js["halted"] != nil || js["unavailable"] == nil {
		t.Fatalf("/v1/status JSON: %s", body)
	}
	if _, body := get(t, n, "/metrics"); !strings.Contains(body, "\ncontrolfeed_unavailable 1\n") || !strings.Contains(body, "\ncontrolfeed_halted 0\n") {
		t.Fatalf("/metrics while unavailable:\n%s", body)
	}
	waitFor(t, "/healthz to report the unavailability after the grace", func() bool {
		code, body := get(t, n, "/healthz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "applier unavailable since")
	})
	if time.Since(status(t, n).Unavailable.Since) < grace {
		t.Fatal("/healthz reported the unavailability within the grace")
	}
	stored, err := node.ReadStatus(ctx, n.DB())
	if err != nil || stored.Halted != nil || stored.State != "" {
		t.Fatalf("ReadStatus: %+v, %v; want no halt stored", stored, err)
	}
	if err := applier.Skip(ctx, n.DB(), "evt-1"); !errors.Is(err, applier.ErrNotHalted) {
		t.Fatalf("Skip on an unavailable node: %v; want ErrNotHalted", err)
	}

	failpoint.Disable()
	waitFor(t, "the node to apply once the disk has room", func() bool { s := status(t, n); return s.Cursor == 1 && s.Unavailable == nil })
	if code, body := get(t, n, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz after recovery = %d %q", code, body)
	}
	if s := status(t, n); s.State != "applying" || s.Applied != 1 || s.Skipped != 0 {
		t.Fatalf("after recovery: %+v", s)
	}
}

// holeSource wraps a file feed source, claims dense positions, and hides
// the event at hide until hide is cleared: a feed that skipped an event it
// still holds.
type holeSource struct {
	feed.Source
	mu   sync.Mutex
	hide uint64
}

func (s *holeSource) Poll(ctx context.Context, since uint64) ([]controlevent.Event, error) {
	evs, err := s.Source.Poll(ctx, since)
	s.mu.Lock()
	defer s.mu.Unlock()
	out := evs[:0]
	for _, e := range evs {
		if e.ControlVersion != s.hide {
			out = append(out, e)
		}
	}
	return out, err
}

func (s *holeSource) CheckGap(_ context.Context, cursor, next uint64) error {
	return &feed.GapError{Source: s.Name(), Cursor: cursor, Next: next, Missing: cursor + 1, Reason: "test: hidden"}
}

func (s *holeSource) Close() error { return s.Source.(io.Closer).Close() }

// A gap on a running node: state "gap" with the positions in /v1/status,
// controlfeed_gap 1, /healthz 503 at once, nothing applied past it, no halt;
// once the feed delivers the event the node goes on.
func TestNode_GapReported(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fcfg := feed.SourceConfig{FileDir: filepath.Join(dir, "feed")}
	sink, err := feed.OpenSink("file", fcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.(io.Closer).Close() })
	for _, id := range []string{"evt-1", "evt-2", "evt-3"} {
		if _, err := sink.Append(ctx, controlevent.Event{EventID: id, Type: kv.TypeDelete, Key: "k", CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	hs := &holeSource{hide: 2}
	n := start(t, &node.Config{DB: filepath.Join(dir, "n.db"), FeedSource: "file", Feed: fcfg, Listen: "127.0.0.1:0",
		PollInterval: 5 * time.Millisecond, UnavailableGrace: time.Hour,
		WrapSource: func(src feed.Source) feed.Source { hs.Source = src; return hs }})

	waitFor(t, "the node to report the gap", func() bool { return status(t, n).Gap != nil })
	s := status(t, n)
	if s.State != "gap" || s.Gap.Cursor != 1 || s.Gap.Next != 3 || s.Gap.Missing != 2 || s.Halted != nil || s.Cursor != 1 {
		t.Fatalf("status: state %q, gap %+v, halted %+v, cursor %d", s.State, s.Gap, s.Halted, s.Cursor)
	}
	if code, body := get(t, n, "/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "gap in the feed") {
		t.Fatalf("/healthz with a gap = %d %q", code, body)
	}
	if _, body := get(t, n, "/metrics"); !strings.Contains(body, "\ncontrolfeed_gap 1\n") || !strings.Contains(body, "\ncontrolfeed_halted 0\n") {
		t.Fatalf("/metrics with a gap:\n%s", body)
	}
	if err := applier.Skip(ctx, n.DB(), "evt-3"); !errors.Is(err, applier.ErrNotHalted) {
		t.Fatalf("Skip past a gap: %v; want ErrNotHalted", err)
	}

	hs.mu.Lock()
	hs.hide = 0
	hs.mu.Unlock()
	waitFor(t, "the node to apply past the closed gap", func() bool { s := status(t, n); return s.Cursor == 3 && s.Gap == nil })
	if code, body := get(t, n, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz after the gap closed = %d %q", code, body)
	}
	if s := status(t, n); s.State != "applying" || s.Process.Gaps != 1 {
		t.Fatalf("after the gap: state %q, gaps %d", s.State, s.Process.Gaps)
	}
}
