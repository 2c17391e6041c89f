package natsconn

import (
	"cmp"
	"context"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// connectBudget is the dialer of one Connect: it bounds the whole initial
// connect (every server's TCP dial and handshake, INFO, TLS, CONNECT, PING)
// by one deadline, the connect timeout after Connect began, where nats.go
// gives each server the whole timeout for its handshake, so that servers
// that accept and never answer (a stopped process: the kernel still accepts)
// each add one timeout.
//
// Each server gets an equal share of what is left: with n servers, the
// k-th (0-based) may take (deadline-now)/(n-k), and the last one all
// that is left. A server that refuses at once gives its share to the ones
// after it, and a healthy server answers in a fraction of its share, so
// one stalled server among three still leaves the others two thirds of the
// timeout. Once the initial connect has ended (done), the dialer is a plain
// net.Dialer with the timeout: a reconnect gives each server its whole
// timeout again, as nats.go does.
//
// One Dial is one server: Connect turns nats.go's host lookup off
// (nats.SkipHostLookup) and Dial resolves the name itself, trying its
// addresses in random order (unless nats.DontRandomize) as nats.go would,
// each within the server's share.
type connectBudget struct {
	dialer    net.Dialer
	servers   int
	lookup    bool // resolve host names in Dial (nats.go's lookup is off)
	randomize bool

	mu       sync.Mutex
	deadline time.Time // zero once the initial connect has ended
	attempts int
}

// newConnectBudget returns the dialer for a connect to servers URLs with
// the options opts (their Timeout, or nats.go's default, is the budget), or
// nil if opts bring their own dialer (nats.SetCustomDialer), which is left
// alone.
func newConnectBudget(servers int, opts []nats.Option) *connectBudget {
	o := nats.GetDefaultOptions()
	for _, opt := range opts {
		if opt != nil {
			_ = opt(&o) // an option that fails fails again in nats.Connect, which reports it
		}
	}
	if o.CustomDialer != nil || o.InProcessServer != nil {
		return nil
	}
	timeout := cmp.Or(o.Timeout, nats.DefaultTimeout)
	b := &connectBudget{servers: max(servers, 1), deadline: time.Now().Add(timeout),
		lookup: !o.SkipHostLookup, randomize: !o.NoRandomize}
	if o.Dialer != nil {
		b.dialer = *o.Dialer
	}
	if o.AllowMultipathTCP != nil {
		b.dialer.SetMultipathTCP(*o.AllowMultipathTCP)
	}
	b.dialer.Timeout = timeout
	return b
}

// done ends the initial connect: later dials are a reconnect's.
func (b *connectBudget) done() {
	b.mu.Lock()
	b.deadline = time.Time{}
	b.mu.Unlock()
}

// share returns the deadline of the next server's attempt, zero if the
// initial connect has ended.
func (b *connectBudget) share() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.deadline.IsZero() {
		return time.Time{}
	}
	now := time.Now()
	left := b.deadline.Sub(now)
	if n := b.servers - b.attempts; n > 1 {
		left /= time.Duration(n)
	}
	b.attempts++
	return now.Add(left)
}

// Dial implements nats.CustomDialer. nats.go calls it once per server.
func (b *connectBudget) Dial(network, address string) (net.Conn, error) {
	deadline := b.share()
	if !deadline.IsZero() && !time.Now().Before(deadline) {
		return nil, &net.OpError{Op: "dial", Net: network, Addr: addr(address), Err: errBudgetSpent}
	}
	ctx := context.Background()
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	hosts := b.hosts(ctx, address)
	var err error
	for _, h := range hosts {
		d := b.dialer
		d.Timeout /= time.Duration(len(hosts)) // as nats.go does
		var c net.Conn
		if c, err = d.DialContext(ctx, network, h); err != nil {
			continue
		}
		if deadline.IsZero() {
			return c, nil
		}
		// Bound the handshake even where nats.go sets no deadline (the
		// TLS handshake of a wss:// server); nats.go clears it once
		// connected.
		if err := c.SetDeadline(deadline); err != nil {
			c.Close()
			return nil, err
		}
		return &budgetConn{Conn: c, b: b, deadline: deadline}, nil
	}
	return nil, err
}

// hosts returns the addresses to dial for address, resolved and shuffled
// the way nats.go's own dialing would, or address alone.
func (b *connectBudget) hosts(ctx context.Context, address string) []string {
	host, port, err := net.SplitHostPort(address)
	if !b.lookup || err != nil || net.ParseIP(host) != nil {
		return []string{address}
	}
	r := cmp.Or(b.dialer.Resolver, net.DefaultResolver)
	addrs, _ := r.LookupHost(ctx, host)
	if len(addrs) == 0 {
		return []string{address}
	}
	hosts := make([]string, len(addrs))
	for i, a := range addrs {
		hosts[i] = net.JoinHostPort(a, port)
	}
	if b.randomize {
		rand.Shuffle(len(hosts), func(i, j int) { hosts[i], hosts[j] = hosts[j], hosts[i] })
	}
	return hosts
}

// budgetConn is a connection dialed during the initial connect: the read
// deadlines nats.go sets on it for the handshake are cut to its attempt's
// share until the connect has ended.
type budgetConn struct {
	net.Conn
	b        *connectBudget
	deadline time.Time
}

func (c *budgetConn) clamp(t time.Time) time.Time {
	c.b.mu.Lock()
	connecting := !c.b.deadline.IsZero()
	c.b.mu.Unlock()
	if connecting && !t.IsZero() && t.After(c.deadline) {
		return c.deadline
	}
	return t
}

func (c *budgetConn) SetDeadline(t time.Time) error     { return c.Conn.SetDeadline(c.clamp(t)) }
func (c *budgetConn) SetReadDeadline(t time.Time) error { return c.Conn.SetReadDeadline(c.clamp(t)) }

// errBudgetSpent is the dial error of a server whose turn comes after the
// connect timeout has run out.
var errBudgetSpent = budgetError{}

type budgetError struct{}

func (budgetError) Error() string   { return "the connect timeout ran out before this server's turn" }
func (budgetError) Timeout() bool   { return true }
func (budgetError) Temporary() bool { return true }

// addr is the address of a server not dialed.
type addr string

func (a addr) Network() string { return "tcp" }
func (a addr) String() string  { return string(a) }
