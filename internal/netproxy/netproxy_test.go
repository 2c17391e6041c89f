package netproxy_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/internal/netproxy"
)

// echoServer answers every line with the same line, on a random port.
func echoServer(t *testing.T) string {
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
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func start(t *testing.T) *netproxy.Proxy {
	t.Helper()
	p, err := netproxy.Listen("127.0.0.1:0", echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

type client struct {
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, p *netproxy.Proxy) *client {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{c: c, r: bufio.NewReader(c)}
}

func (c *client) send(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(c.c, line+"\n"); err != nil {
		t.Fatalf("write %q: %v", line, err)
	}
}

// recv reads one line within d; ok is false on a timeout.
func (c *client) recv(t *testing.T, d time.Duration) (line string, ok bool, err error) {
	t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(d))
	s, err := c.r.ReadString('\n')
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return "", false, nil
	}
	return strings.TrimSuffix(s, "\n"), err == nil, err
}

func (c *client) want(t *testing.T, line string) {
	t.Helper()
	got, ok, err := c.recv(t, 5*time.Second)
	if !ok || got != line {
		t.Fatalf("read %q (ok %v, err %v), want %q", got, ok, err, line)
	}
}

func (c *client) wantNothing(t *testing.T) {
	t.Helper()
	if got, ok, err := c.recv(t, 100*time.Millisecond); ok || err != nil {
		t.Fatalf("read %q (err %v) while stalled, want nothing", got, err)
	}
}

func TestProxy_Forwards(t *testing.T) {
	p := start(t)
	c := dial(t, p)
	c.send(t, "hello")
	c.want(t, "hello")
	if p.Accepted() != 1 || p.Open() != 1 {
		t.Fatalf("Accepted %d Open %d, want 1 and 1", p.Accepted(), p.Open())
	}
}

func TestProxy_Pause(t *testing.T) {
	for _, d := range []netproxy.Direction{netproxy.ToTarget, netproxy.ToClient, netproxy.Both} {
		t.Run(d.String(), func(t *testing.T) {
			p := start(t)
			c := dial(t, p)
			c.send(t, "before")
			c.want(t, "before")
			p.Pause(d)
			c.send(t, "one")
			c.send(t, "two")
			c.wantNothing(t)
			// A connection opened during the stall is stalled too.
			c2 := dial(t, p)
			c2.send(t, "late")
			c2.wantNothing(t)
			p.Resume(d)
			c.want(t, "one")
			c.want(t, "two")
			c2.want(t, "late")
			p.Resume(d) // no-op
			c.send(t, "after")
			c.want(t, "after")
		})
	}
}

func TestProxy_Cut(t *testing.T) {
	p := start(t)
	c := dial(t, p)
	c.send(t, "x")
	c.want(t, "x")
	p.Pause(netproxy.ToClient)
	c.send(t, "held")
	time.Sleep(20 * time.Millisecond)
	if n := p.Cut(); n != 1 {
		t.Fatalf("Cut closed %d connections, want 1", n)
	}
	// The held bytes are dropped and the connection is gone.
	if got, ok, err := c.recv(t, 5*time.Second); ok || err == nil {
		t.Fatalf("read %q after Cut, want an error", got)
	}
	p.Resume(netproxy.ToClient)
	// New connections work.
	c2 := dial(t, p)
	c2.send(t, "y")
	c2.want(t, "y")
}

func TestProxy_Refuse(t *testing.T) {
	p := start(t)
	p.Refuse(true)
	wantDead(t, p)
	if p.Accepted() != 0 {
		t.Fatalf("Accepted %d while refusing", p.Accepted())
	}
	p.Refuse(false)
	c2 := dial(t, p)
	c2.send(t, "y")
	c2.want(t, "y")
}

func TestProxy_Close(t *testing.T) {
	p := start(t)
	c := dial(t, p)
	c.send(t, "x")
	c.want(t, "x")
	p.Pause(netproxy.Both) // Close must not wait on a stalled copy
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Fatal("dial after Close succeeded")
	}
}

func TestProxy_TargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p, err := netproxy.Listen("127.0.0.1:0", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	wantDead(t, p)
}

// wantDead checks that a connection through p carries nothing: the TCP
// handshake may succeed before the proxy closes the connection, or the dial
// may already see the reset.
func wantDead(t *testing.T, p *netproxy.Proxy) {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		return
	}
	defer c.Close()
	cl := &client{c: c, r: bufio.NewReader(c)}
	_, _ = io.WriteString(c, "x\n")
	if _, ok, err := cl.recv(t, 5*time.Second); ok || err == nil {
		t.Fatal("a connection that should be closed carried data")
	}
}

func TestListen_Errors(t *testing.T) {
	if _, err := netproxy.Listen("127.0.0.1:0", ""); err == nil {
		t.Error("Listen accepted an empty target")
	}
	if _, err := netproxy.Listen("256.0.0.1:0", "127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "netproxy: listen") {
		t.Errorf("Listen on a bad address: %v", err)
	}
}
