package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/internal/natsembed"
)

// TestServe_JetStream runs a producer and a node through Main against an
// embedded NATS server, with the feed and the artifact store selected by
// flags and environment variables (no shared directory), and tails the
// stream.
func TestServe_JetStream(t *testing.T) {
	srv := natsembed.StartForTest(t)
	dir := t.TempDir()
	env := []string{"CONTROLFEED_NATS_URL=" + srv.ClientURL(), "CONTROLFEED_ARTIFACT_STORE=jetstream",
		"CONTROLFEED_POLL_INTERVAL=20ms"}
	pdb, ndb := filepath.Join(dir, "p.db"), filepath.Join(dir, "n.db")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	serve := func(args ...string) {
		go func() {
			m := &Main{Environ: func() []string { return env }}
			done <- m.Run(ctx, append([]string{"serve"}, args...))
		}()
	}
	serve("--db", pdb, "--feed-sink", "jetstream")
	for _, kv := range [][2]string{{"a", "1"}, {"b", "2"}, {"a", "3"}} {
		mustRun(t, env, "", "kv", "put", "--db", pdb, kv[0], kv[1])
	}
	// The jetstream Source never creates the stream: start the node once the
	// producer has published.
	waitFor(t, 30*time.Second, "the stream to hold 3 events", func() bool {
		out, _, err := run(t, env, "", "tail", "--feed-source", "jetstream", "--follow=false")
		return err == nil && strings.Count(out, "\n") == 3
	})
	serve("--db", ndb, "--feed-source", "jetstream", "--node-name", "n1")

	var st map[string]any
	waitFor(t, 30*time.Second, "the node to apply 3 events", func() bool {
		out, _, err := run(t, env, "", "status", "--db", ndb, "--json") // fails until serve created the db
		return err == nil && json.Unmarshal([]byte(out), &st) == nil && st["cursor"] == float64(3)
	})
	if got := mustRun(t, env, "", "kv", "list", "--db", ndb); got != "a\t3\nb\t2\n" {
		t.Errorf("node kv list = %q", got)
	}
	for _, db := range []string{pdb, ndb} {
		if _, err := os.Stat(db + ".artifacts"); !os.IsNotExist(err) {
			t.Errorf("the jetstream store touched the file store's default directory %s.artifacts: %v", db, err)
		}
	}
	out := mustRun(t, env, "", "tail", "--feed-source", "jetstream", "--from", "2", "--follow=false")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "3\tkv.put\ta\t") {
		t.Errorf("tail --from 2 = %q", out)
	}
	cancel()
	for range 2 {
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
}
