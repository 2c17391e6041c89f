package natsconn

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/internal/natsembed"
	"github.com/nats-io/nats.go"
)

// silentServer accepts connections and never writes to them: what a
// stopped (SIGSTOP) or wedged nats-server looks like to a client, since the
// kernel still completes the TCP handshake.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "nats://" + ln.Addr().String()
}

func TestConnect_SilentServersShareOneTimeout(t *testing.T) {
	const timeout = time.Second
	urls := []string{silentServer(t), silentServer(t), silentServer(t)}
	start := time.Now()
	nc, err := Connect("test", urls, Auth{}, Options("t", time.Second, Auth{}, nats.Timeout(timeout))...)
	took := time.Since(start)
	if err == nil {
		nc.Close()
		t.Fatal("Connect to three servers that never answer succeeded")
	}
	// nats.go alone gives each server the whole timeout for its handshake:
	// three timeouts here.
	if took > 2*timeout {
		t.Errorf("Connect took %v, more than its timeout %v allows", took, timeout)
	}
	for _, want := range []string{"test: connect ", urls[0], "connect timeout 1s", "equal share"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestConnect_SilentServersLeaveTimeForAHealthyOne(t *testing.T) {
	const timeout = 1500 * time.Millisecond
	s := natsembed.StartForTest(t)
	// In this order (no randomizing), the healthy server's turn comes after
	// two that each hold their share of the timeout.
	urls := []string{silentServer(t), silentServer(t), s.ClientURL()}
	start := time.Now()
	nc, err := Connect("test", urls, Auth{}, Options("t", time.Second, Auth{}, nats.Timeout(timeout), nats.DontRandomize())...)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("Connect with one healthy server of three: %v", err)
	}
	defer nc.Close()
	if got := nc.ConnectedUrl(); got != s.ClientURL() {
		t.Errorf("connected to %s, want the healthy %s", got, s.ClientURL())
	}
	if took > timeout+timeout/2 {
		t.Errorf("Connect took %v, more than its timeout %v allows", took, timeout)
	}
	// The connection now in use is past the initial connect: a deadline
	// nats.go sets on it later is not cut to the connect's budget.
	if err := nc.Flush(); err != nil {
		t.Errorf("flush after connect: %v", err)
	}
}

func TestConnectBudget_Shares(t *testing.T) {
	b := newConnectBudget(3, []nats.Option{nats.Timeout(3 * time.Second)})
	if b == nil {
		t.Fatal("no budget for three servers")
	}
	if b.dialer.Timeout != 3*time.Second {
		t.Errorf("dialer timeout %v, want the connect timeout", b.dialer.Timeout)
	}
	addr := strings.TrimPrefix(silentServer(t), "nats://")
	var shares []time.Duration
	for range 3 {
		c, err := b.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		bc, ok := c.(*budgetConn)
		if !ok {
			t.Fatalf("a dial of the initial connect returned %T, not a budgeted connection", c)
		}
		shares = append(shares, time.Until(bc.deadline))
		// The handshake's deadline is cut to the attempt's share.
		if got := bc.clamp(time.Now().Add(time.Hour)); !got.Equal(bc.deadline) {
			t.Errorf("clamp of a deadline an hour away: %v, want the share's %v", got, bc.deadline)
		}
		c.Close()
	}
	// About 1 s each: a third, then half of the two thirds left, then the rest.
	for i, s := range shares {
		if s < 800*time.Millisecond || s > 3*time.Second {
			t.Errorf("attempt %d got %v of a 3 s budget over three servers, want about 1 s", i, s)
		}
	}
	if c, err := b.Dial("tcp", addr); err == nil {
		c.Close()
		if _, ok := c.(*budgetConn); !ok {
			t.Errorf("a fourth dial before the budget ran out returned %T", c)
		}
	}
	b.done()
	c, err := b.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*budgetConn); ok {
		t.Error("a reconnect's dial (after the initial connect) is still cut to the connect's budget")
	}
	if b := newConnectBudget(1, []nats.Option{nats.SetCustomDialer(&net.Dialer{})}); b != nil {
		t.Error("options with their own dialer got the budget's dialer too")
	}
}

func TestConnect_UnknownScheme(t *testing.T) {
	for _, u := range []string{"htp://127.0.0.1:4222", "http://alice:S3cr3tPW@127.0.0.1:4222"} {
		_, err := Connect("test", []string{u}, Auth{}, Options("t", 0, Auth{})...)
		if err == nil {
			t.Fatalf("Connect(%q) succeeded", u)
		}
		if !strings.Contains(err.Error(), "unknown scheme") || !strings.Contains(err.Error(), "nats://") {
			t.Errorf("Connect(%q): %v, want the unknown scheme named and nats:// suggested", u, err)
		}
		if strings.Contains(err.Error(), "S3cr3tPW") {
			t.Errorf("Connect(%q) error carries the password: %v", u, err)
		}
	}
	for _, u := range []string{"NATS://127.0.0.1:1", "tls://127.0.0.1:1", "127.0.0.1:1"} {
		if err := checkScheme(u); err != nil {
			t.Errorf("checkScheme(%q): %v", u, err)
		}
	}
}
