package main

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/internal/natsembed"
)

func jsFor(t *testing.T, srv *natsembed.Server) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// A node started before its producer (no --nats-replicas, as nodes are
// run) creates neither the feed stream nor the artifact bucket nor its
// lease bucket: serve keeps running and /v1/status says unavailable, naming
// the missing stream. The producer started later creates them, and the
// node applies its changes.
func TestServe_NodeBeforeProducer(t *testing.T) {
	srv := natsembed.StartForTest(t)
	js := jsFor(t, srv)
	dir := t.TempDir()
	env := []string{"CONTROLFEED_NATS_URL=" + srv.ClientURL(), "CONTROLFEED_ARTIFACT_STORE=jetstream",
		"CONTROLFEED_POLL_INTERVAL=20ms"}
	pdb, ndb := filepath.Join(dir, "p.db"), filepath.Join(dir, "n.db")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 2)
	serve := func(args ...string) {
		go func() {
			m := &Main{Stderr: &syncBuffer{}, Environ: func() []string { return env }}
			done <- m.Run(ctx, append([]string{"serve"}, args...))
		}()
	}
	addr := freeAddr(t)
	serve("--db", ndb, "--feed-source", "jetstream", "--node-name", "n1", "--listen", addr)

	var st struct {
		State       string `json:"state"`
		Cursor      uint64 `json:"cursor"`
		Unavailable *struct {
			Error string `json:"error"`
		} `json:"unavailable"`
	}
	status := func() bool {
		resp, err := http.Get("http://" + addr + "/v1/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&st) == nil
	}
	waitFor(t, 30*time.Second, "the node to report the missing stream", func() bool {
		return status() && st.State == "unavailable" && st.Unavailable != nil && strings.Contains(st.Unavailable.Error, "does not exist yet")
	})
	time.Sleep(300 * time.Millisecond) // a few retries
	l := js.StreamNames(ctx)
	var names []string
	for n := range l.Name() {
		names = append(names, n)
	}
	if len(names) != 0 {
		t.Fatalf("streams before the producer started: %v, want none (a node must not create the feed stream or a bucket)", names)
	}

	serve("--db", pdb, "--feed-sink", "jetstream")
	mustRun(t, env, "", "kv", "put", "--db", pdb, "greeting", "hello")
	waitFor(t, 60*time.Second, "the node to apply the change", func() bool {
		out, _, _ := run(t, env, "", "kv", "get", "--db", ndb, "greeting")
		return out == "hello\n"
	})
	for _, name := range []string{"CONTROLFEED", "OBJ_controlfeed-artifacts", "KV_CFNODES_CONTROLFEED", "KV_CONTROLFEED_SNAPSHOTS"} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s after the producer: %v", name, err)
		}
		if r := s.CachedInfo().Config.Replicas; r != 1 {
			t.Errorf("stream %s has %d replicas, want 1", name, r)
		}
	}
	cancel()
	for range 2 {
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
}

// A producer asked for 3 replicas refuses the existing R1 stream (serve)
// and R1 bucket (kv put), exiting with the nats command that fixes each.
func TestProducer_ReplicasMismatch(t *testing.T) {
	srv := natsembed.StartForTest(t)
	js := jsFor(t, srv)
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "CONTROLFEED", Subjects: []string{"controlfeed.events"},
		Storage: jetstream.FileStorage, Duplicates: 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "controlfeed-artifacts", Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	env := []string{"CONTROLFEED_NATS_URL=" + srv.ClientURL(), "CONTROLFEED_ARTIFACT_STORE=jetstream"}
	db := filepath.Join(t.TempDir(), "p.db")
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	m := &Main{Stderr: &syncBuffer{}, Environ: func() []string { return env }}
	err := m.Run(sctx, []string{"serve", "--db", db, "--feed-sink", "jetstream", "--nats-replicas", "3"})
	if err == nil || !strings.Contains(err.Error(), "nats stream edit CONTROLFEED --replicas 3") {
		t.Errorf("serve --nats-replicas 3 on an R1 stream: %v, want the nats stream edit command", err)
	}
	_, _, err = run(t, env, "", "kv", "put", "--db", db, "--nats-replicas", "3", "k", "v")
	if err == nil || !strings.Contains(err.Error(), "nats stream edit OBJ_controlfeed-artifacts --replicas 3") {
		t.Errorf("kv put --nats-replicas 3 on an R1 bucket: %v, want the nats stream edit command", err)
	}
	if _, _, err := run(t, env, "", "kv", "put", "--db", db, "k", "v"); err != nil {
		t.Errorf("kv put with the matching replicas: %v", err)
	}
}
