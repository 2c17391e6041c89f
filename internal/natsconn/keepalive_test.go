package natsconn

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/controlfeed/controlfeed/internal/freeport"
	"github.com/controlfeed/controlfeed/internal/natsembed"
	"github.com/controlfeed/controlfeed/internal/netproxy"
)

// TestOptions_StalledServerIsDropped: a server that stops answering but
// keeps the connection open (a SIGSTOPped cluster member; here a proxy that
// holds the bytes) is dropped by the keepalive, and the client reconnects to
// the next server of its list, instead of staying on it for nats.go's
// default of minutes while every request times out.
func TestOptions_StalledServerIsDropped(t *testing.T) {
	s := natsembed.StartForTest(t)
	p, err := netproxy.Listen("127.0.0.1:0", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	stalled := "nats://" + p.Addr()
	nc, err := Connect("test", []string{stalled, s.ClientURL()}, Auth{}, Options("t", 100*time.Millisecond, Auth{}, nats.DontRandomize())...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got := nc.ConnectedUrl(); got != stalled {
		t.Fatalf("connected to %s, want the first server %s", got, stalled)
	}
	p.Pause(netproxy.Both)
	defer p.Resume(netproxy.Both)
	start := time.Now()
	// A liveness bound, generous for a loaded machine: the keepalive
	// declares the connection stale after about (MaxPingsOutstanding+1) x
	// PingInterval; nats.go's default would take 4 minutes.
	bound := 4 * (MaxPingsOutstanding + 1) * PingInterval
	for nc.ConnectedUrl() != s.ClientURL() || !nc.IsConnected() {
		if time.Since(start) > bound {
			t.Fatalf("after %v the client is still on the stalled server (%s, status %v)", bound, nc.ConnectedUrl(), nc.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("reconnected to the answering server %v after the stall began", time.Since(start).Round(100*time.Millisecond))
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush on the new server: %v", err)
	}
}

// TestConnect_Hints: a refused connection, refused credentials and a list
// separated by ';' say what to check.
func TestConnect_Hints(t *testing.T) {
	s := natsembed.StartWithAuthForTest(t, "u", "right")
	if _, err := Connect("test", []string{s.ClientURL()}, Auth{}, Options("t", time.Second, Auth{User: "u", Password: "wrong"}, nats.Timeout(2*time.Second))...); err == nil ||
		!strings.Contains(err.Error(), "refused this client's credentials") || strings.Contains(err.Error(), "wrong") {
		t.Errorf("wrong password: %v", err)
	}
	closed := freeport.MustAddr(t)
	if _, err := Connect("test", []string{"nats://" + closed}, Auth{}, Options("t", time.Second, Auth{}, nats.Timeout(2*time.Second))...); err == nil ||
		!strings.Contains(err.Error(), "no server accepted the connection") {
		t.Errorf("refused connection: %v", err)
	}
	for _, sep := range []string{";", " ", "; "} {
		if _, err := Connect("test", []string{s.ClientURL() + sep + s.ClientURL()}, Auth{}); err == nil || !strings.Contains(err.Error(), "separate several URLs with commas") {
			t.Errorf("%q in the list: %v", sep, err)
		}
	}
}
