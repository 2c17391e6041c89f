package natsfeed

import (
	"sync"

	"github.com/nats-io/nats.go"
)

// Advisory subjects of JetStream leader elections (default domain): a
// stream or a consumer that lost its leader, for a quorum loss or a server
// restart, is back when one of these is published for it.
const (
	advisoryStreamLeader   = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.*"
	advisoryConsumerLeader = "$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.*.*"
)

// recovery implements feed.Recoverer for a conn: it is set up by the first
// Recovered call (nothing is subscribed before), and its channel is closed
// and replaced whenever the connection reconnects or a JetStream leader is
// elected. Any leader counts, not only the feed stream's: the artifact and
// lease buckets are streams too, and a spurious early retry costs one
// attempt. Without the right to subscribe to the advisories (a restricted
// account) only reconnects are signaled; the refused subscription is
// logged by the connection's error handler at debug level.
type recovery struct {
	once   sync.Once
	mu     sync.Mutex
	ch     chan struct{}
	status chan nats.Status
	subs   []*nats.Subscription
	closed bool
}

// Recovered implements feed.Recoverer.
func (c *conn) Recovered() <-chan struct{} {
	r := &c.rec
	r.once.Do(func() { c.startRecovery() })
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ch
}

func (c *conn) startRecovery() {
	r := &c.rec
	r.mu.Lock()
	r.ch = make(chan struct{})
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.status = c.nc.StatusChanged(nats.CONNECTED)
	r.mu.Unlock()
	go func(st chan nats.Status) {
		for range st { // ends when close removes the listener
			c.fireRecovered("reconnected")
		}
	}(r.status)
	for _, subj := range []string{advisoryStreamLeader, advisoryConsumerLeader} {
		sub, err := c.nc.Subscribe(subj, func(m *nats.Msg) { c.fireRecovered(m.Subject) })
		if err != nil {
			c.log.Debug("natsfeed: cannot watch JetStream leader elections; recoveries are signaled on reconnects only", "subject", subj, "err", err)
			continue
		}
		r.mu.Lock()
		r.subs = append(r.subs, sub)
		r.mu.Unlock()
	}
}

// recoveryChan returns the current recovery channel, nil while
// recoveries are not watched.
func (c *conn) recoveryChan() <-chan struct{} {
	r := &c.rec
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	return r.ch
}

// fireRecovered wakes everyone waiting on the current channel.
func (c *conn) fireRecovered(why string) {
	r := &c.rec
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.ch == nil {
		return
	}
	c.log.Debug("natsfeed: broker recovered; retries may start over", "why", why)
	close(r.ch)
	r.ch = make(chan struct{})
}

// closeRecovery stops watching (the connection may be the caller's and
// outlive us).
func (c *conn) closeRecovery() {
	r := &c.rec
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.closed = true
	if r.status != nil {
		c.nc.RemoveStatusListener(r.status)
	}
	for _, s := range r.subs {
		_ = s.Unsubscribe()
	}
	r.subs = nil
}
