package chaos_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/internal/freeport"
	"github.com/controlfeed/controlfeed/internal/natsembed"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/kv"
)

// TestBehindRetention_EndToEnd: a node whose cursor is older than the
// stream's first sequence reports it on /v1/status (behind_retention),
// /metrics (controlfeed_behind_retention 1) and its log, applies nothing;
// the documented recovery (replace its database with a copy of a healthy
// node's, then start it again) brings it back in step.
func TestBehindRetention_EndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test with OS processes; skipped with -short")
	}
	ctx := context.Background()
	bin, _ := buildBinaries(t)
	srv := natsembed.StartForTest(t)
	url := srv.ClientURL()
	dir := t.TempDir()
	sink, err := natsfeed.NewSink(ctx, feed.NATSConfig{URLs: []string{url}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	publish := func(from, to int) {
		for i := from; i <= to; i++ {
			e := controlevent.Event{EventID: fmt.Sprintf("evt-%d", i), Type: kv.TypeDelete, Key: fmt.Sprintf("k%d", i),
				Version: 1, CreatedAt: time.Now().UTC()}
			if _, err := sink.Append(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
	}
	serve := func(name string) (*exec.Cmd, string, *syncWriter) {
		addr := freeport.MustAddr(t)
		log := &syncWriter{b: &strings.Builder{}}
		cmd := exec.Command(bin, "serve", "--db", filepath.Join(dir, name+".db"), "--feed-source", natsfeed.Name,
			"--nats-url", url, "--node-name", name, "--listen", addr, "--poll-interval", "20ms")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		cmd.Stderr = log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd, addr, log
	}
	get := func(addr, path string) string {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	waitUntil := func(what string, f func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !f() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	cursorOf := func(name string) uint64 {
		db, err := node.OpenDB(ctx, filepath.Join(dir, name+".db"))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		st, err := node.ReadStatus(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		return st.Cursor
	}

	// A healthy node applies 1..10, then stops.
	publish(1, 10)
	healthy, haddr, _ := serve("healthy")
	waitUntil("healthy node at 10", func() bool { return strings.Contains(get(haddr, "/v1/status"), `"cursor": 10,`) })
	healthy.Process.Signal(os.Interrupt)
	healthy.Wait()

	// Retention drops 1..5 (as MaxAge/MaxBytes would).
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, natsfeed.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSequence(6)); err != nil {
		t.Fatal(err)
	}

	// A new node (cursor 0) cannot catch up by replay.
	late, laddr, llog := serve("late")
	waitUntil("behind_retention on /v1/status", func() bool { return strings.Contains(get(laddr, "/v1/status"), `"behind_retention": "`) })
	if m := get(laddr, "/metrics"); !strings.Contains(m, "controlfeed_behind_retention 1") {
		t.Errorf("/metrics lacks controlfeed_behind_retention 1:\n%s", m)
	}
	if !strings.Contains(get(laddr, "/healthz"), "retention") {
		t.Errorf("/healthz does not name the retention problem")
	}
	waitUntil("the behind-retention log line", func() bool { return strings.Contains(llog.string(), "behind the feed's retention") })
	publish(11, 12)
	time.Sleep(300 * time.Millisecond) // a chance to (wrongly) apply what is after the gap
	late.Process.Signal(os.Interrupt)
	late.Wait()
	if c := cursorOf("late"); c != 0 {
		t.Fatalf("late node's cursor is %d; it must apply nothing past a retention gap", c)
	}

	// Recovery: replace its database with a copy of a healthy node's.
	hdb, err := node.OpenDB(ctx, filepath.Join(dir, "healthy.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(filepath.Join(dir, "late.db"+suffix))
	}
	if _, err := hdb.ExecContext(ctx, `VACUUM INTO ?`, filepath.Join(dir, "late.db")); err != nil {
		t.Fatal(err)
	}
	hdb.Close()
	_, laddr, _ = serve("late")
	waitUntil("the recovered node at 12", func() bool {
		s := get(laddr, "/v1/status")
		return strings.Contains(s, `"cursor": 12,`) && !strings.Contains(s, "behind_retention")
	})
}

// syncWriter lets the test read a child's stderr while it is written.
type syncWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) string() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
