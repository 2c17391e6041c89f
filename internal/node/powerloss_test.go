package node_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/feed"
	_ "github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/internal/natsembed"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/kv"
)

// TestNode_LosesItsLastCommits is a node's side of a power loss: its
// database comes back older than what it applied and acknowledged to the
// broker (synchronous=NORMAL keeps a node consistent but may roll back its
// last commits). The node must replay from its own cursor, not from the
// broker's acknowledgement floor, and end identical to the producer with
// every event applied once.
func TestNode_LosesItsLastCommits(t *testing.T) {
	ctx := context.Background()
	srv := natsembed.StartForTest(t)
	dir := t.TempDir()
	fcfg := feed.SourceConfig{NATS: feed.NATSConfig{URLs: []string{srv.ClientURL()}, NodeName: "n1"}}
	art := artifactDir(filepath.Join(dir, "art"))
	prod := start(t, &node.Config{DB: filepath.Join(dir, "p.db"), FeedSink: "jetstream", Feed: fcfg, Artifact: art})
	put := func(from, to int) {
		for i := from; i <= to; i++ {
			if _, err := kv.Put(ctx, prod.DB(), prod.Store(), fmt.Sprintf("k%d", i%7), []byte(fmt.Sprintf("v%d", i))); err != nil {
				t.Fatal(err)
			}
		}
		prod.Pump().Notify()
	}
	nodeDB := filepath.Join(dir, "n1.db")
	runNode := func(until uint64) {
		t.Helper()
		rctx, cancel := context.WithCancel(ctx)
		n, err := node.Open(rctx, &node.Config{DB: nodeDB, FeedSource: "jetstream", Feed: fcfg, Artifact: art,
			NodeName: "n1", PollInterval: 10 * time.Millisecond})
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- n.Run(rctx) }()
		waitFor(t, fmt.Sprintf("n1 to reach cursor %d", until), func() bool { return status(t, n).Cursor == until })
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}

	put(1, 5)
	runNode(5)
	image := filepath.Join(dir, "n1-at-5.db")
	copyDB(t, nodeDB, image)
	put(6, 12)
	runNode(12) // applied and acknowledged 6..12
	// The power loss: the node's last commits never reached its disk.
	for _, suffix := range []string{"-wal", "-shm"} {
		os.Remove(nodeDB + suffix)
	}
	copyDB(t, image, nodeDB)
	put(13, 14)
	runNode(14)

	db, err := sql.Open("sqlite", "file:"+nodeDB+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var rows, distinct int
	if err := db.QueryRow(`SELECT COUNT(*), COUNT(DISTINCT event_id) FROM controlfeed_applied_events`).Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	if rows != 14 || distinct != 14 {
		t.Errorf("applied_events: %d rows, %d distinct; want 14 events once each", rows, distinct)
	}
	want, _ := kv.Digest(ctx, prod.DB())
	if got, _ := kv.Digest(ctx, db); got != want {
		t.Errorf("node digest %s != producer digest %s after replaying its lost commits", got, want)
	}
}

// copyDB copies a closed database file (its WAL was checkpointed on close).
func copyDB(t *testing.T, from, to string) {
	t.Helper()
	if _, err := os.Stat(from + "-wal"); err == nil {
		t.Fatalf("%s-wal exists: the database was not closed cleanly", from)
	}
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestNode_HeadUnknownIsUnhealthy: once the broker stops answering, the
// node's head and lag are as last read, so a caught-up-looking node must
// still turn unhealthy after the stall threshold, naming the failing head
// reads (the applier's own unavailability is held back here by a long
// grace, to isolate the reason).
func TestNode_HeadUnknownIsUnhealthy(t *testing.T) {
	ctx := context.Background()
	srv := natsembed.StartForTest(t)
	dir := t.TempDir()
	fcfg := feed.SourceConfig{NATS: feed.NATSConfig{URLs: []string{srv.ClientURL()}, NodeName: "n1"}}
	art := artifactDir(filepath.Join(dir, "art"))
	prod := start(t, &node.Config{DB: filepath.Join(dir, "p.db"), FeedSink: "jetstream", Feed: fcfg, Artifact: art})
	n := start(t, &node.Config{DB: filepath.Join(dir, "n1.db"), FeedSource: "jetstream", Feed: fcfg, Artifact: art,
		NodeName: "n1", PollInterval: 10 * time.Millisecond, Listen: "127.0.0.1:0",
		StallThreshold: time.Second, UnavailableGrace: time.Hour})
	if _, err := kv.Put(ctx, prod.DB(), prod.Store(), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	prod.Pump().Notify()
	waitFor(t, "n1 to apply the event", func() bool { s := status(t, n); return s.Cursor == 1 && s.Lag != nil && *s.Lag == 0 })
	if code, body := get(t, n, "/healthz"); code != 200 {
		t.Fatalf("/healthz before the broker stops = %d %q", code, body)
	}
	srv.Shutdown()
	waitFor(t, "/healthz to name the failing head reads", func() bool {
		code, body := get(t, n, "/healthz")
		return code == 503 && strings.Contains(body, "feed head unknown")
	})
	if p := status(t, n).Process; p == nil || p.HeadError == "" || p.HeadErrorSince == nil {
		t.Errorf("status process = %+v; want the head error and since when", p)
	}
}
