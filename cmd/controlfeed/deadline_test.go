package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/internal/natsembed"
	"github.com/controlfeed/controlfeed/internal/netproxy"
)

// runBounded runs the command in-process and fails the test if it has not
// returned within limit: a command without a deadline on a broker call
// hangs there.
func runBounded(t *testing.T, limit time.Duration, env []string, stdin string, args ...string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, _, err := run(t, env, stdin, args...)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		t.Fatalf("controlfeed %s still blocked after %v", strings.Join(args, " "), limit)
		return nil
	}
}

// kv put against a broker that keeps the connection open but stops
// answering ends with an error naming the operation and the connection,
// whether the broker stalls before the command connects or in the middle
// of the artifact upload.
func TestKVPut_StalledBrokerFails(t *testing.T) {
	srv := natsembed.StartForTest(t)
	proxy, err := netproxy.Listen("127.0.0.1:0", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	env := []string{"CONTROLFEED_NATS_URL=nats://" + proxy.Addr(), "CONTROLFEED_ARTIFACT_STORE=jetstream",
		"CONTROLFEED_NATS_TIMEOUT=1s"}
	db := filepath.Join(t.TempDir(), "p.db")
	// The bucket exists: the stall hits the upload, not its creation.
	if err := runBounded(t, 2*time.Minute, env, "", "kv", "put", "--db", db, "k", "v"); err != nil {
		t.Fatalf("kv put through the proxy: %v", err)
	}

	t.Run("mid-upload", func(t *testing.T) {
		watch, err := nats.Connect(srv.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		defer watch.Close()
		var stalled atomic.Bool
		sub, err := watch.Subscribe("$O.controlfeed-artifacts.C.>", func(*nats.Msg) {
			if stalled.CompareAndSwap(false, true) {
				proxy.Pause(netproxy.Both)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := watch.Flush(); err != nil {
			t.Fatal(err)
		}
		defer proxy.Resume(netproxy.Both)
		raw := make([]byte, 3<<20)
		rand.Read(raw)
		value := base64.StdEncoding.EncodeToString(raw) // 4 MiB
		err = runBounded(t, 2*time.Minute, env, value, "kv", "put", "--db", db, "big", "-")
		if !stalled.Load() {
			t.Fatalf("the upload never reached the server (kv put: %v)", err)
		}
		if err == nil {
			t.Fatal("kv put succeeded through a stalled broker")
		}
		for _, want := range []string{"upload", "connection", "--nats-timeout"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("kv put error does not mention %q: %v", want, err)
			}
		}
		t.Logf("kv put: %v", err)
	})

	t.Run("before-connect", func(t *testing.T) {
		proxy.Pause(netproxy.Both)
		defer proxy.Resume(netproxy.Both)
		err := runBounded(t, 2*time.Minute, env, "", "kv", "put", "--db", db, "k2", "v")
		if err == nil {
			t.Fatal("kv put succeeded through a stalled broker")
		}
		if !strings.Contains(err.Error(), "--nats-timeout") {
			t.Errorf("kv put error does not mention --nats-timeout: %v", err)
		}
		t.Logf("kv put: %v", err)
	})

	// The broker answers again: the same command works.
	if err := runBounded(t, 2*time.Minute, env, "", "kv", "put", "--db", db, "k3", "v"); err != nil {
		t.Fatalf("kv put after the stalls: %v", err)
	}
}

// tail --follow on jetstream, waiting for events, exits non-zero naming
// --nats-timeout when the broker stops answering, instead of waiting on.
func TestTail_StalledBrokerFails(t *testing.T) {
	srv := natsembed.StartForTest(t)
	if _, err := jsFor(t, srv).CreateStream(t.Context(), jetstream.StreamConfig{Name: "CONTROLFEED",
		Subjects: []string{"controlfeed.events"}, Storage: jetstream.FileStorage, Duplicates: time.Hour}); err != nil {
		t.Fatal(err)
	}
	proxy, err := netproxy.Listen("127.0.0.1:0", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	env := []string{"CONTROLFEED_NATS_URL=nats://" + proxy.Addr(), "CONTROLFEED_NATS_TIMEOUT=1s"}
	go func() {
		for end := time.Now().Add(time.Minute); proxy.Open() == 0 && time.Now().Before(end); {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond) // tail is waiting for events
		proxy.Pause(netproxy.Both)
	}()
	defer proxy.Resume(netproxy.Both)
	err = runBounded(t, 2*time.Minute, env, "", "tail", "--feed-source", "jetstream", "--follow")
	if err == nil || !strings.Contains(err.Error(), "--nats-timeout") {
		t.Fatalf("tail --follow through a stalled broker: %v, want an error naming --nats-timeout", err)
	}
	t.Logf("tail: %v", err)
}

// kv put given a --nats-url list of servers that accept connections and
// never answer (stopped processes) fails within about one --nats-timeout,
// not one per server, and says the connect ran out of time; with a healthy
// server in the list as well, it succeeds.
func TestKVPut_SilentServersInURLList(t *testing.T) {
	silent := func() string { // accepts connections, never answers
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			var held []net.Conn
			defer func() {
				for _, c := range held {
					c.Close()
				}
			}()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				held = append(held, c)
			}
		}()
		return "nats://" + ln.Addr().String()
	}
	a, b, c := silent(), silent(), silent()
	const timeout = 2 * time.Second
	db := filepath.Join(t.TempDir(), "p.db")
	env := []string{"CONTROLFEED_ARTIFACT_STORE=jetstream", "CONTROLFEED_NATS_TIMEOUT=" + timeout.String()}

	start := time.Now()
	err := runBounded(t, time.Minute, append(env, "CONTROLFEED_NATS_URL="+strings.Join([]string{a, b, c}, ",")), "",
		"kv", "put", "--db", db, "k", "v")
	took := time.Since(start)
	if err == nil {
		t.Fatal("kv put succeeded with no server answering")
	}
	for _, want := range []string{"connect timeout 2s", "--nats-timeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("kv put error does not mention %q: %v", want, err)
		}
	}
	// Before the connect shared one timeout, each silent server took a
	// whole one: 6 s here.
	if took > 2*timeout {
		t.Errorf("kv put took %v with --nats-timeout %v and three silent servers", took, timeout)
	}

	srv := natsembed.StartForTest(t)
	env = append(env, "CONTROLFEED_NATS_URL="+strings.Join([]string{a, b, srv.ClientURL()}, ","))
	if err := runBounded(t, time.Minute, env, "", "kv", "put", "--db", db, "k", "v"); err != nil {
		t.Fatalf("kv put with one healthy server of three: %v", err)
	}
}

// A broker's answer that JetStream has no leader or quorum for the call
// (a 503 API error such as 10008) gets its own hint, and JetStream not
// enabled at all (also a 503) does not.
func TestNATSHint_NoLeader(t *testing.T) {
	s := settings{ArtifactStore: "jetstream"}
	unavailable := fmt.Errorf("natsobject: bucket %q: %w", "b",
		&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"})
	err := s.natsTimeoutHint(kvPutCmd, unavailable)
	if !errors.Is(err, unavailable) {
		t.Errorf("the hint does not wrap the error: %v", err)
	}
	for _, want := range []string{"JetStream system temporarily unavailable", "no quorum or no leader", "majority", "nats server report jetstream"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("hint %q does not mention %q", err, want)
		}
	}
	for _, other := range []error{
		fmt.Errorf("x: %w", jetstream.ErrJetStreamNotEnabled),
		fmt.Errorf("x: %w", &jetstream.APIError{Code: 404, ErrorCode: 10059, Description: "stream not found"}),
	} {
		if got := s.natsTimeoutHint(kvPutCmd, other); got != other {
			t.Errorf("natsTimeoutHint(%v) = %v, want it unchanged", other, got)
		}
	}
	if got := (&settings{ArtifactStore: "file"}).natsTimeoutHint(kvPutCmd, unavailable); got != unavailable {
		t.Errorf("a command without a jetstream backend got a broker hint: %v", got)
	}
	// An upload during a quorum loss: the publish finds no stream leader.
	noResponse := fmt.Errorf("natsobject: upload 9 bytes to bucket %q: %w", "b", jetstream.ErrNoStreamResponse)
	err = s.natsTimeoutHint(kvPutCmd, noResponse)
	if !errors.Is(err, jetstream.ErrNoStreamResponse) || !strings.Contains(err.Error(), "has no leader now") || !strings.Contains(err.Error(), "majority") {
		t.Errorf("hint for %v = %v", noResponse, err)
	}
}
