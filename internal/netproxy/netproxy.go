// Package netproxy is a TCP proxy for fault-injection tests: it listens on a
// local address, forwards every accepted connection to a target, and on
// command stalls the bytes in either direction, cuts the open connections or
// refuses new ones. Put it between a client and a server (a NATS client and
// an embedded nats-server, for example) to see what the client does when
// the network pauses or drops, the way etcd's robustness tests use its
// pkg/proxy.
//
// # Semantics
//
// A stall (Pause) keeps every connection open and holds the bytes: each
// forwarding goroutine finishes the read it is in and waits before writing,
// so at most one read buffer per direction and connection is held by the
// proxy and the rest stays in the kernel's socket buffers, as on a real
// stalled link. Resume releases them in order; nothing is lost or
// reordered. A stall applies to the connections open at the time and to
// those accepted while it lasts.
//
// Cut closes every open connection abruptly (with a TCP reset where the
// platform allows), dropping the bytes the proxy holds, as a broken link
// does. The listener stays open, so a client that reconnects gets a new
// connection at once, unless Refuse is on: then new connections are
// accepted and closed immediately until Refuse is turned off.
//
// All methods are safe for concurrent use.
package netproxy

import (
	"errors"
	"fmt"
	"net"
	"sync"
)

// Direction selects which bytes a stall holds.
type Direction int

const (
	// ToTarget is the direction from the client to the target.
	ToTarget Direction = 1 << iota
	// ToClient is the direction from the target back to the client.
	ToClient
	// Both directions.
	Both = ToTarget | ToClient
)

// String names the direction.
func (d Direction) String() string {
	switch d {
	case ToTarget:
		return "to-target"
	case ToClient:
		return "to-client"
	case Both:
		return "both"
	}
	return fmt.Sprintf("Direction(%d)", int(d))
}

// Proxy forwards connections from its listener to a target address. Create
// it with Listen; stop it with Close.
type Proxy struct {
	ln     net.Listener
	target string
	dial   func(network, addr string) (net.Conn, error)

	toTarget, toClient gate

	mu       sync.Mutex
	closed   bool
	refuse   bool
	conns    map[*link]struct{}
	accepted int
	wg       sync.WaitGroup
}

// link is one proxied connection: the client side and the target side.
type link struct {
	client, target net.Conn
	done           chan struct{} // closed when the link is torn down
	once           sync.Once
}

func (l *link) close() {
	l.once.Do(func() {
		close(l.done)
		abort(l.client)
		abort(l.target)
	})
}

// abort closes c, with a reset instead of an orderly shutdown when c is TCP.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// Listen starts a proxy listening on addr ("127.0.0.1:0" picks a free port;
// see Addr) that forwards to target ("host:port"). The target is dialed per
// accepted connection; if it cannot be reached, that client connection is
// closed.
func Listen(addr, target string) (*Proxy, error) {
	if target == "" {
		return nil, errors.New("netproxy: listen: empty target address")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("netproxy: listen %s: %w", addr, err)
	}
	p := &Proxy{ln: ln, target: target, dial: net.Dial, conns: map[*link]struct{}{}}
	p.toTarget.init()
	p.toClient.init()
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr returns the address the proxy listens on, "host:port".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target returns the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// Accepted returns how many client connections the proxy has accepted and
// forwarded (refused ones not counted).
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Open returns how many proxied connections are open now.
func (p *Proxy) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Pause stalls the given directions of every connection, open or future,
// until Resume. Pausing a paused direction is a no-op.
func (p *Proxy) Pause(d Direction) {
	if d&ToTarget != 0 {
		p.toTarget.set(true)
	}
	if d&ToClient != 0 {
		p.toClient.set(true)
	}
}

// Resume releases the bytes held in the given directions and lets them flow
// again. Resuming a direction that is not paused is a no-op.
func (p *Proxy) Resume(d Direction) {
	if d&ToTarget != 0 {
		p.toTarget.set(false)
	}
	if d&ToClient != 0 {
		p.toClient.set(false)
	}
}

// Cut closes every open connection abruptly and returns how many it closed.
// Bytes held by a stall are dropped. New connections are still accepted
// (see Refuse). Pause state is kept.
func (p *Proxy) Cut() int {
	p.mu.Lock()
	links := make([]*link, 0, len(p.conns))
	for l := range p.conns {
		links = append(links, l)
	}
	p.mu.Unlock()
	for _, l := range links {
		l.close()
	}
	return len(links)
}

// Refuse turns refusal of new connections on or off. While on, the proxy
// accepts each new connection and closes it at once, so a client sees its
// connection attempts fail; open connections are not affected (Cut them).
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	p.refuse = on
	p.mu.Unlock()
}

// Close stops listening, cuts every connection and waits for the proxy's
// goroutines to end. It is idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	p.Cut()
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // listener closed
		}
		p.mu.Lock()
		if p.closed || p.refuse {
			p.mu.Unlock()
			abort(c)
			continue
		}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(c)
	}
}

func (p *Proxy) serve(c net.Conn) {
	defer p.wg.Done()
	t, err := p.dial("tcp", p.target)
	if err != nil {
		abort(c)
		return
	}
	l := &link{client: c, target: t, done: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		l.close()
		return
	}
	p.conns[l] = struct{}{}
	p.accepted++
	p.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.forward(l, c, t, &p.toTarget) }()
	go func() { defer wg.Done(); p.forward(l, t, c, &p.toClient) }()
	wg.Wait()
	l.close()
	p.mu.Lock()
	delete(p.conns, l)
	p.mu.Unlock()
}

// forward copies src to dst, waiting at g before each write. When either
// side ends or fails it tears the whole link down (no half-close: a
// half-open proxied connection would hide the failure from the other side).
func (p *Proxy) forward(l *link, src, dst net.Conn, g *gate) {
	defer l.close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !g.wait(l.done) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF or a failure: the link goes down as a whole
		}
	}
}

// gate blocks writers while paused.
type gate struct {
	mu     sync.Mutex
	paused bool
	open   chan struct{} // closed while not paused
}

func (g *gate) init() {
	g.open = make(chan struct{})
	close(g.open)
}

func (g *gate) set(paused bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if paused == g.paused {
		return
	}
	g.paused = paused
	if paused {
		g.open = make(chan struct{})
	} else {
		close(g.open)
	}
}

// wait returns true once the gate is open, false if done closes first.
func (g *gate) wait(done <-chan struct{}) bool {
	g.mu.Lock()
	ch := g.open
	g.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-done:
		return false
	}
}
