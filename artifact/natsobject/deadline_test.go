package natsobject_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/natsobject"
	"github.com/controlfeed/controlfeed/internal/natsembed"
	"github.com/controlfeed/controlfeed/internal/netproxy"
)

// A Put whose caller gives no deadline ends with an error when the broker
// stops answering in the middle of the upload (the connection stays open,
// no byte comes back), instead of waiting for acks that never come.
func TestPutStalledBrokerEndsWithinDeadline(t *testing.T) {
	srv := natsembed.StartForTest(t)
	proxy, err := netproxy.Listen("127.0.0.1:0", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	ctx := context.Background()
	h := newHarness(ctx, t, srv)
	cfg := h.cfg
	cfg.URLs = []string{"nats://" + proxy.Addr()}
	s, err := natsobject.New(ctx, cfg, &natsobject.Options{SpoolDir: h.spool, RequestTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })

	// Stall the proxy as soon as the first chunk of the upload reaches the
	// server: the rest of the upload and every ack are held.
	watch, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(watch.Close)
	var stalled atomic.Bool
	sub, err := watch.Subscribe(fmt.Sprintf("$O.%s.C.>", cfg.Bucket), func(*nats.Msg) {
		if stalled.CompareAndSwap(false, true) {
			proxy.Pause(netproxy.Both)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}

	data := make([]byte, 4<<20)
	rand.Read(data)
	done := make(chan error, 1)
	go func() {
		_, err := s.Put(ctx, bytes.NewReader(data))
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Put succeeded through a stalled broker")
		}
		t.Logf("Put: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("Put still blocked 2 minutes after the broker stalled: no deadline")
	}
	if !stalled.Load() {
		t.Fatal("the stall never happened: no chunk reached the server")
	}
	sub.Unsubscribe()

	// The broker answers again: the same store uploads the content.
	proxy.Resume(netproxy.Both)
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := s.Put(pctx, bytes.NewReader(data)); err != nil {
		t.Fatalf("Put after the stall: %v", err)
	}
}

// Negative deadlines and rates are refused before anything connects.
func TestNewRefusesNegativeDeadlines(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg  artifact.NATSConfig
		opts natsobject.Options
	}{
		"config RequestTimeout":   {cfg: artifact.NATSConfig{RequestTimeout: -time.Second}},
		"options TransferRate":    {opts: natsobject.Options{TransferRate: -1}},
		"options TransferTimeout": {opts: natsobject.Options{TransferTimeout: -time.Second}},
	} {
		tc.cfg.URLs = []string{"nats://127.0.0.1:1"}
		if _, err := natsobject.New(t.Context(), tc.cfg, &tc.opts); err == nil || !strings.Contains(err.Error(), "negative") {
			t.Errorf("%s: New = %v, want a negative-value error", name, err)
		}
	}
}

// A Get whose caller's deadline is far away still ends within the store's
// own bound for the object (RequestTimeout plus its size at TransferRate)
// when the broker stops answering as the transfer starts: on a cluster a
// download whose chunk delivery was lost in a leader change otherwise
// waited for the caller's deadline (the applier's one-minute CallTimeout)
// while the cluster had long recovered.
func TestGetStalledBrokerEndsWithinDeadline(t *testing.T) {
	// An object of one chunk is read with one direct get, a larger one
	// through nats.go's consumer: the broker stalls as each transfer starts.
	t.Run("one chunk", func(t *testing.T) { testGetStalled(t, 1<<10) })
	t.Run("chunks", func(t *testing.T) { testGetStalled(t, 1<<20) })
}

// testGetStalled stalls the broker once a Get of an object of size bytes
// has found it readable, before the transfer asks for any chunk, and
// checks that the Get ends within the store's bound, then reads the
// object once the broker answers again.
func testGetStalled(t *testing.T, size int) {
	srv := natsembed.StartForTest(t)
	proxy, err := netproxy.Listen("127.0.0.1:0", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	ctx := context.Background()
	h := newHarness(ctx, t, srv)
	cfg := h.cfg
	cfg.URLs = []string{"nats://" + proxy.Addr()}
	s, err := natsobject.New(ctx, cfg, &natsobject.Options{SpoolDir: h.spool, RequestTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	data := make([]byte, size)
	rand.Read(data)
	ref, err := s.Put(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}

	var stalled atomic.Bool
	defer natsobject.SetBeforeTransfer(func() {
		if stalled.CompareAndSwap(false, true) {
			proxy.Pause(netproxy.Both)
		}
	})()

	gctx, cancel := context.WithTimeout(ctx, 10*time.Minute) // the caller's deadline: far away
	defer cancel()
	done := make(chan error, 1)
	go func() {
		rc, err := s.Get(gctx, ref)
		if err == nil {
			_, err = io.ReadAll(rc)
			rc.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Get read the object through a stalled broker")
		}
		t.Logf("Get: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("Get still blocked a minute after the broker stalled; its bound is at most 2s (RequestTimeout 1s + its size at 1 MiB/s)")
	}
	if !stalled.Load() {
		t.Fatal("the stall never happened: the Get never reached its transfer")
	}
	proxy.Resume(netproxy.Both)
	rc, err := s.Get(ctx, ref)
	if err != nil {
		t.Fatalf("Get after the stall: %v", err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get after the stall: %d bytes, %v", len(got), err)
	}
}

// New's error for a bucket look-up the broker cannot answer names the
// connection's state and the server, so an operator sees which server
// failed it (here one without JetStream).
func TestNew_LookupErrorNamesTheServer(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	_, err = natsobject.New(t.Context(), artifact.NATSConfig{URLs: []string{ns.ClientURL()}, RequestTimeout: time.Second}, nil)
	if err == nil {
		t.Fatal("New succeeded on a server without JetStream")
	}
	for _, want := range []string{`bucket "controlfeed-artifacts": look it up (connection connected, server ` + ns.ClientURL()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("New: %v, want it to contain %q", err, want)
		}
	}
}
