package natsconn

import (
	"cmp"
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
// Each attempt gets an equal share of what is left: with n servers, the
// k-th dial (0-based) may take (deadline-now)/(n-k), and the last one all
// that is left. A server that refuses at once gives its share to the ones
// after it, and a healthy server answers in a fraction of its share, so
// one stalled server among three still leaves the others two thirds of the
// timeout. Once the initial connect has ended (done), the dialer is a plain
// net.Dialer with the timeout: a reconnect gives each server its whole
// timeout again, as nats.go does.
type connectBudget struct {
	dialer  net.Dialer
	servers int

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
	if o.CustomDialer != nil {
		return nil
	}
	timeout := cmp.Or(o.Timeout, nats.DefaultTimeout)
	b := &connectBudget{servers: max(servers, 1), deadline: time.Now().Add(timeout)}
	if o.Dialer != nil {
		b.dialer = *o.Dialer
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

// Dial implements nats.CustomDialer.
func (b *connectBudget) Dial(network, address string) (net.Conn, error) {
	b.mu.Lock()
	if b.deadline.IsZero() {
		b.mu.Unlock()
		return b.dialer.Dial(network, address)
	}
	left := time.Until(b.deadline)
	if n := b.servers - b.attempts; n > 1 {
		left /= time.Duration(n)
	}
	b.attempts++
	b.mu.Unlock()
	if left <= 0 {
		return nil, &net.OpError{Op: "dial", Net: network, Addr: nil, Err: errBudgetSpent}
	}
	d := b.dialer
	d.Deadline = time.Now().Add(left)
	c, err := d.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return &budgetConn{Conn: c, b: b, deadline: d.Deadline}, nil
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
