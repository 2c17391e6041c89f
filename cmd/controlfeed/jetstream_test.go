package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/internal/freeport"
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

// TestServe_EmbeddedNATS runs a producer with --embedded-nats (feed sink and
// artifact store default to jetstream) and a node that joins it with the
// flags the producer logs, then checks the node converges, that tail leaves
// no durable consumer behind, and that both stop cleanly.
func TestServe_EmbeddedNATS(t *testing.T) {
	dir := t.TempDir()
	pdb, ndb := filepath.Join(dir, "p.db"), filepath.Join(dir, "n.db")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var plog syncBuffer
	done := make(chan error, 2)
	go func() {
		m := &Main{Stderr: &plog}
		done <- m.Run(ctx, []string{"serve", "--db", pdb, "--embedded-nats", "--nats-listen", "127.0.0.1:0", "--poll-interval", "20ms"})
	}()
	var url string
	waitFor(t, 30*time.Second, "the embedded server's URL in the log", func() bool {
		for line := range strings.SplitSeq(plog.String(), "\n") {
			if _, rest, ok := strings.Cut(line, "embedded NATS server ready\" url="); ok {
				url, _, _ = strings.Cut(rest, " ")
				return true
			}
		}
		return false
	})
	if !strings.Contains(plog.String(), "--feed-source jetstream --nats-url "+url+" --artifact-store jetstream") {
		t.Errorf("the producer log does not show how to join:\n%s", plog.String())
	}
	env := []string{"CONTROLFEED_NATS_URL=" + url, "CONTROLFEED_ARTIFACT_STORE=jetstream"}
	mustRun(t, env, "", "kv", "put", "--db", pdb, "k", "v1")
	mustRun(t, env, "", "kv", "put", "--db", pdb, "k", "v2")
	waitFor(t, 30*time.Second, "the stream to hold 2 events", func() bool {
		out, _, err := run(t, env, "", "tail", "--feed-source", "jetstream", "--follow=false")
		return err == nil && strings.Count(out, "\n") == 2
	})
	go func() {
		m := &Main{Environ: func() []string { return env }}
		done <- m.Run(ctx, []string{"serve", "--db", ndb, "--feed-source", "jetstream", "--node-name", "n1", "--poll-interval", "20ms"})
	}()
	waitFor(t, 30*time.Second, "the node to apply k=v2", func() bool {
		out, _, err := run(t, env, "", "kv", "get", "--db", ndb, "k")
		return err == nil && out == "v2\n"
	})

	// tail read the stream twice: no durable consumer but the node's.
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "CONTROLFEED")
	if err != nil {
		t.Fatal(err)
	}
	var durables []string
	for info := range st.ListConsumers(ctx).Info() {
		if info.Config.Durable != "" {
			durables = append(durables, info.Config.Durable)
		}
	}
	if len(durables) != 1 || durables[0] != "n1" {
		t.Errorf("durable consumers %q, want only the node's [n1]", durables)
	}
	nc.Close()

	cancel()
	for range 2 {
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
	if _, err := os.Stat(pdb + ".nats"); err != nil {
		t.Errorf("default --nats-store %s.nats: %v", pdb, err)
	}
	if _, err := os.Stat(pdb + ".artifacts"); !os.IsNotExist(err) {
		t.Errorf("--embedded-nats used the file artifact store: %v", err)
	}
}

func TestServe_EmbeddedNATSConflicts(t *testing.T) {
	_, _, err := run(t, nil, "", "serve", "--db", filepath.Join(t.TempDir(), "p.db"), "--embedded-nats", "--nats-url", "nats://x:1")
	if err == nil || !isUsage(err) || !strings.Contains(err.Error(), "conflict") {
		t.Fatalf("error = %v, want a usage error about the conflict", err)
	}
}

// TestNATSServer runs the broker-only command, connects a tail to the URL it
// prints, and stops it.
func TestNATSServer(t *testing.T) {
	if _, _, err := run(t, nil, "", "nats-server"); err == nil || !isUsage(err) || !strings.Contains(err.Error(), "--store") {
		t.Fatalf("without --store: %v, want a usage error naming --store", err)
	}
	store := filepath.Join(t.TempDir(), "nats")
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		m := &Main{Stdout: &out}
		done <- m.Run(ctx, []string{"nats-server", "--listen", "127.0.0.1:0", "--store", store})
	}()
	var url string
	waitFor(t, 30*time.Second, "nats-server ready", func() bool {
		_, rest, ok := strings.Cut(out.String(), "nats-server ready: ")
		url, _, _ = strings.Cut(rest, "\n")
		return ok && strings.HasSuffix(out.String(), "\n")
	})
	env := []string{"CONTROLFEED_NATS_URL=" + url, "CONTROLFEED_ARTIFACT_STORE=jetstream"}
	dbf := filepath.Join(t.TempDir(), "p.db")
	go func() {
		m := &Main{Environ: func() []string { return env }}
		m.Run(ctx, []string{"serve", "--db", dbf, "--feed-sink", "jetstream", "--poll-interval", "20ms"})
	}()
	mustRun(t, env, "", "kv", "put", "--db", dbf, "k", "v")
	waitFor(t, 30*time.Second, "the producer to publish through the broker", func() bool {
		out, _, err := run(t, env, "", "tail", "--feed-source", "jetstream", "--follow=false")
		return err == nil && strings.HasPrefix(out, "1\tkv.put\tk\t")
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("nats-server: %v", err)
	}
	if _, err := os.Stat(store); err != nil {
		t.Errorf("store %s: %v", store, err)
	}
}

// TestServe_WaitsForBroker starts a node before its broker: it must wait
// (logging why) instead of exiting, and run once the broker is up.
func TestServe_WaitsForBroker(t *testing.T) {
	addr := freeport.MustAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var log syncBuffer
	done := make(chan error, 1)
	go func() {
		m := &Main{Stderr: &log}
		done <- m.Run(ctx, []string{"serve", "--db", filepath.Join(t.TempDir(), "n.db"), "--feed-source", "jetstream",
			"--node-name", "n1", "--nats-url", "nats://" + addr, "--artifact-store", "jetstream"})
	}()
	waitFor(t, 30*time.Second, "the node to report the missing broker", func() bool {
		return strings.Contains(log.String(), "the NATS server does not answer")
	})
	srv, err := natsembed.Start(natsembed.Options{Listen: addr, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	waitFor(t, 30*time.Second, "the node to start", func() bool {
		return strings.Contains(log.String(), "controlfeed node starting")
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
}

// Only errors meaning "the broker cannot serve right now" are waited out at
// start-up; anything else (bad configuration) fails at once.
func TestBrokerUnavailable(t *testing.T) {
	for _, err := range []error{
		fmt.Errorf("natsfeed: connect: %w", nats.ErrNoServers),
		fmt.Errorf("natsobject: bucket %q: %w", "controlfeed-artifacts", context.DeadlineExceeded),
		fmt.Errorf("stream info: %w", jetstream.ErrJetStreamNotEnabled),
		fmt.Errorf("request: %w", nats.ErrTimeout),
		// A connection reset during the handshake (a broker dying, a
		// proxy cutting it) used to end serve with exit status 1.
		fmt.Errorf("natsfeed: sink: connect: %w", &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}),
		fmt.Errorf("natsfeed: sink: connect: %w", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNRESET)}),
		fmt.Errorf("natsfeed: source: connect: %w", io.EOF),
	} {
		if !brokerUnavailable(err) {
			t.Errorf("brokerUnavailable(%v) = false, want true", err)
		}
	}
	for _, err := range []error{
		errors.New("natsfeed: stream CONTROLFEED uses work-queue retention"),
		fmt.Errorf("connect: %w", nats.ErrAuthorization),
	} {
		if brokerUnavailable(err) {
			t.Errorf("brokerUnavailable(%v) = true, want false", err)
		}
	}
}

// TestTail_JetStreamInvalidMessage: a message on the feed's subject that is
// not an event (another publisher's) is printed as INVALID and tail goes on
// to the events after it.
func TestTail_JetStreamInvalidMessage(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := feed.SourceConfig{NATS: feed.NATSConfig{URLs: []string{srv.ClientURL()}}}
	sink, err := feed.OpenSink("jetstream", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(sink)
	appendOne := func(id string) {
		if _, err := sink.Append(ctx, controlevent.Event{EventID: id, Type: "kv.put", Key: "k", CreatedAt: time.Unix(0, 0)}); err != nil {
			t.Fatal(err)
		}
	}
	appendOne("evt-1")
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, natsfeed.DefaultSubject, []byte("not json")); err != nil {
		t.Fatal(err)
	}
	appendOne("evt-3")
	env := []string{"CONTROLFEED_NATS_URL=" + srv.ClientURL()}
	out := mustRun(t, env, "", "tail", "--feed-source", "jetstream", "--follow=false")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "evt-1") || !strings.HasPrefix(lines[1], "2\tINVALID\t-\t"+feed.UnreadableEventID(2)) || !strings.Contains(lines[2], "evt-3") {
		t.Fatalf("tail printed:\n%s\nwant evt-1, the invalid message at 2, evt-3", out)
	}
}
