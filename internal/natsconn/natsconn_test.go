package natsconn

import (
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func apply(t *testing.T, opts []nats.Option) nats.Options {
	t.Helper()
	o := nats.GetDefaultOptions()
	for _, f := range opts {
		if err := f(&o); err != nil {
			t.Fatal(err)
		}
	}
	return o
}

func TestOptions(t *testing.T) {
	o := apply(t, Options("controlfeed-test", 250*time.Millisecond, Auth{User: "u", Password: "p"}))
	if o.Name != "controlfeed-test" || o.MaxReconnect != -1 || o.ReconnectWait != 250*time.Millisecond {
		t.Errorf("name %q, max reconnect %d, wait %v", o.Name, o.MaxReconnect, o.ReconnectWait)
	}
	if o.User != "u" || o.Password != "p" {
		t.Errorf("user %q password %q", o.User, o.Password)
	}
	// extra options come last and win.
	o = apply(t, Options("a", time.Second, Auth{}, nats.Name("b")))
	if o.Name != "b" || o.User != "" {
		t.Errorf("with an override: name %q user %q", o.Name, o.User)
	}
	// A CA file that does not exist fails when the option is applied, so a
	// misconfigured TLS setting is reported at start-up.
	f := Options("a", time.Second, Auth{TLSCAFile: "/nonexistent/ca.pem"})
	o = nats.GetDefaultOptions()
	var failed bool
	for _, opt := range f {
		if err := opt(&o); err != nil {
			failed = true
		}
	}
	if !failed {
		t.Error("a missing TLS CA file was accepted")
	}
}

// stalledServer accepts connections and never answers, as a stopped or
// overloaded server does.
func stalledServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	return "nats://" + ln.Addr().String()
}

// With several servers that accept and never answer, the client gave each
// the whole connect timeout in turn (three URLs, three timeouts); Connect
// ends within about one.
func TestConnect_StalledServersShareTheTimeout(t *testing.T) {
	const timeout = 2 * time.Second
	urls := []string{stalledServer(t), stalledServer(t), stalledServer(t), stalledServer(t)}
	start := time.Now()
	nc, err := Connect("test", urls, Auth{}, nats.Timeout(timeout), nats.MaxReconnects(0))
	took := time.Since(start)
	if err == nil {
		nc.Close()
		t.Fatal("Connect to servers that never answer succeeded")
	}
	// Each server's share is 500ms: the four end after about 2s. Without
	// the share they take 8s; 6s leaves room for a loaded machine.
	if took > 3*timeout {
		t.Fatalf("Connect to %d stalled servers took %v with a %v connect timeout (each server got the whole timeout?): %v", len(urls), took, timeout, err)
	}
	t.Logf("Connect to %d stalled servers: %v after %v", len(urls), err, took.Round(time.Millisecond))
}
