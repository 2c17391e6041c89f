package natsfeed

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// A session is the Source's long-lived reading of its consumer at one known
// position: one subscription on an inbox prefix that receives the answers
// of every pull request of that position, each request on its own reply
// subject under the prefix (so its final status can be told apart;
// deliveries carry the stream subject and cannot be). Once Poll has caught up (a no-wait request ended with "no
// messages" before its batch filled), the session keeps a waiting pull
// request open (the tail request, with an expiry and idle heartbeats), so
// the server delivers each new event as soon as it is stored and a
// steady-state event costs one delivery: Wait returns when it has arrived,
// and Poll takes it from the session's buffer without a request.
//
// Every answer of every request of the session arrives on one subscription,
// in the order the consumer sent it (the server sends deliveries and pull
// statuses through one queue), so the session is in step with the
// consumer for as long as it lives: a message delivered to it either
// arrives, in order, or the link broke (a reconnect, which ends the
// session) or it was taken by another client (a hole, which Poll's
// contiguity check catches). A "no messages" status of a no-wait request
// therefore still proves, as with the one-shot fetch, that everything the
// consumer had delivered before it has arrived.
//
// The buffer is bounded: Poll issues a tail request (TailBatch messages)
// only when the buffer is empty after it took what it returns, and at most
// one tail request is open, so the buffer holds at most TailBatch plus one
// no-wait batch.
//
// A session ends (close) when the consumer is repositioned, when Poll
// fails, when the connection reconnected, when the tail request goes silent
// (no message nor heartbeat for tailSilence), when the server ends it with
// anything but its expiry, and when the node name's lease is lost; the next
// Poll then reconciles the consumer and starts a new one.
type session struct {
	nc         *nats.Conn
	sub        *nats.Subscription
	prefix     string
	pull       string // the consumer's pull request subject
	reconnects uint64 // the connection's reconnect count at the start

	done chan struct{} // closed by close

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced when a status arrives or a waiter's count is reached
	wakeAt    uint64        // the delivered count at which a waiter wants changed closed
	closed    bool
	buf       []*nats.Msg                // deliveries not yet taken, in arrival order
	next      uint64                     // request counter, for reply subjects
	statuses  map[string]pullStatusError // final statuses of the no-wait requests in flight
	waiting   map[string]bool            // the no-wait requests in flight
	delivered uint64                     // deliveries received
	tailing   bool                       // Poll caught up once: keep a tail request open
	tail      string                     // reply subject of the open tail request
	tailLeft  int                        // what the open tail request may still deliver
	tailHB    time.Duration              // its idle heartbeat interval
	tailEnd   *pullStatusError
	lastSeen  time.Time // last message or status of the tail request
}

// Tail request shape. For a durable Source the expiry is bounded by what
// is left of the node name's lease, so that a process that lost the lease
// without noticing (a paused VM) receives nothing once another process can
// have taken over; heartbeats come every third of the expiry while nothing
// is delivered.
const (
	tailBatch         = 1024
	tailExpiresMax    = 30 * time.Second
	tailSilenceFactor = 2 // heartbeats missed before the tail counts as dead
)

func newSession(c *conn, consumer string) (*session, error) {
	ss := &session{
		nc:       c.nc,
		prefix:   c.nc.NewInbox(),
		pull:     apiPrefix + "CONSUMER.MSG.NEXT." + c.cfg.Stream + "." + consumer,
		changed:  make(chan struct{}),
		done:     make(chan struct{}),
		statuses: map[string]pullStatusError{},
		waiting:  map[string]bool{},
	}
	ss.reconnects = c.nc.Stats().Reconnects
	sub, err := c.nc.Subscribe(ss.prefix+".*", ss.onMsg)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s.*: %w", ss.prefix, err)
	}
	// A delivery must never be dropped as a slow consumer: a dropped
	// message is a hole (detected, but costly).
	_ = sub.SetPendingLimits(-1, -1)
	ss.sub = sub
	return ss, nil
}

func (ss *session) onMsg(m *nats.Msg) {
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		return
	}
	if m.Reply == "" {
		code := m.Header.Get("Status")
		desc := m.Header.Get("Description")
		switch {
		case m.Subject == ss.tail:
			ss.lastSeen = time.Now()
			if code != "100" {
				ss.tail = ""
				if code != "408" || desc != "Request Timeout" {
					ss.tailEnd = &pullStatusError{code: code, description: desc}
				}
			}
		case code == "100":
		default:
			if !ss.waiting[m.Subject] {
				break // a request that take gave up on
			}
			if code == "503" {
				desc = "No Responders (the consumer or JetStream is not available)"
			}
			ss.statuses[m.Subject] = pullStatusError{code: code, description: desc}
		}
	} else {
		// A delivery carries the stream subject, not the request's reply
		// subject: it cannot be told which request it answers. The open
		// tail request, first in the server's queue, takes deliveries
		// before any later no-wait request, so each counts against it; an
		// overcount only opens the next one early.
		ss.buf = append(ss.buf, m)
		ss.delivered++
		ended := false
		if ss.tail != "" {
			ss.lastSeen = time.Now()
			if ss.tailLeft--; ss.tailLeft <= 0 {
				ss.tail, ended = "", true
			}
		}
		if !ended && ss.delivered < ss.wakeAt {
			// Nobody waits for this one: during a catch-up batch the
			// Poll wakes once, at the batch's end, not per message.
			ss.mu.Unlock()
			return
		}
	}
	close(ss.changed)
	ss.changed = make(chan struct{})
	ss.wakeAt = math.MaxUint64 // each waiter that goes on waiting says again what it waits for
	ss.mu.Unlock()
}

// waitFor asks onMsg to close changed once n deliveries have been
// received in all (statuses always close it). ss.mu must be held, and the
// caller must take changed in the same critical section.
func (ss *session) waitFor(n uint64) {
	if n < ss.wakeAt {
		ss.wakeAt = n
	}
}

// take returns up to batch buffered deliveries, in arrival order. When
// none is buffered it sends one no-wait pull request for up to batch and
// waits (bounded by ctx and timeout) for its answer, as fetch does, except
// that deliveries of the tail request count too. complete means the
// server finished answering and nothing it delivered is still to come.
func (ss *session) take(ctx context.Context, c *conn, batch int) (fetchResult, error) {
	var r fetchResult
	ss.mu.Lock()
	if len(ss.buf) > 0 {
		ss.mu.Unlock()
		return ss.takeBuffered(ctx, c, batch), nil
	}
	ss.next++
	reply := ss.prefix + "." + strconv.FormatUint(ss.next, 10)
	ss.waiting[reply] = true
	start := ss.delivered
	ss.mu.Unlock()
	defer func() {
		ss.mu.Lock()
		delete(ss.waiting, reply)
		delete(ss.statuses, reply)
		ss.mu.Unlock()
	}()
	req := strconv.AppendInt([]byte(`{"batch":`), int64(batch), 10)
	req = append(req, `,"no_wait":true}`...)
	if err := ss.nc.PublishRequest(ss.pull, reply, req); err != nil {
		return r, fmt.Errorf("pull request: %w", err)
	}
	rctx, cancel := c.reqCtx(ctx)
	defer cancel()
	pendingElsewhere := false // the server said the messages go to the tail request
	for {
		ss.mu.Lock()
		st, answered := ss.statuses[reply]
		switch {
		case answered && st.code == "404":
			r.msgs = ss.takeLocked(batch)
			r.complete = len(ss.buf) == 0
			ss.mu.Unlock()
			return r, nil
		case ss.delivered-start >= uint64(batch):
			// Filled (by this request, or with the tail request's help).
			r.msgs = ss.takeLocked(batch)
			r.complete = true
			ss.mu.Unlock()
			return r, nil
		case answered && st.code == "408" && st.description == "Requests Pending":
			// Messages are pending and go to the open tail request:
			// return once the first has arrived.
			pendingElsewhere = true
			if len(ss.buf) > 0 {
				ss.mu.Unlock()
				return ss.takeBuffered(ctx, c, batch), nil
			}
		case answered:
			if len(ss.buf) > 0 {
				r.msgs = ss.takeLocked(batch)
				ss.mu.Unlock()
				return r, nil
			}
			ss.mu.Unlock()
			return r, &st
		}
		if pendingElsewhere {
			ss.waitFor(ss.delivered + 1)
		} else {
			ss.waitFor(start + uint64(batch))
		}
		changed := ss.changed
		ss.mu.Unlock()
		select {
		case <-changed:
		case <-ss.done:
			return r, errors.New("session closed")
		case <-rctx.Done():
			if ctx.Err() != nil {
				return r, ctx.Err()
			}
			ss.mu.Lock()
			r.msgs = ss.takeLocked(batch)
			ss.mu.Unlock()
			if len(r.msgs) > 0 || pendingElsewhere {
				return r, nil // incomplete: use what arrived
			}
			return r, fmt.Errorf("no answer%s: %w", c.timeoutState(rctx.Err()), rctx.Err())
		}
	}
}

// takeBuffered takes what is buffered, after waiting (bounded by ctx and
// the request timeout) for the deliveries the last buffered one says are
// still pending in the consumer and that the tail request will bring: they
// are on their way, so a Poll returns a burst whole rather than its first
// message alone.
func (ss *session) takeBuffered(ctx context.Context, c *conn, batch int) fetchResult {
	var r fetchResult
	var cancel context.CancelFunc = func() {}
	defer func() { cancel() }()
	var rctx context.Context
	for {
		ss.mu.Lock()
		want := len(ss.buf)
		if ss.tail != "" && want > 0 {
			if md, err := ss.buf[len(ss.buf)-1].Metadata(); err == nil && md.NumPending > 0 {
				want += int(min(md.NumPending, uint64(ss.tailLeft)))
			}
		}
		if len(ss.buf) >= min(want, batch) || ss.closed {
			r.msgs = ss.takeLocked(batch)
			ss.mu.Unlock()
			return r
		}
		ss.waitFor(ss.delivered + uint64(min(want, batch)-len(ss.buf)))
		changed := ss.changed
		ss.mu.Unlock()
		if rctx == nil {
			rctx, cancel = c.reqCtx(ctx)
		}
		select {
		case <-changed:
		case <-rctx.Done():
			ss.mu.Lock()
			r.msgs = ss.takeLocked(batch)
			ss.mu.Unlock()
			return r
		}
	}
}

func (ss *session) takeLocked(batch int) []*nats.Msg {
	n := min(batch, len(ss.buf))
	if n == 0 {
		return nil
	}
	out := make([]*nats.Msg, n)
	copy(out, ss.buf)
	clear(ss.buf[:n])
	ss.buf = ss.buf[n:]
	if len(ss.buf) == 0 {
		ss.buf = nil // release the backing array
	}
	return out
}

// startTailing marks the session caught up: from now on keepTail keeps a
// tail request open.
func (ss *session) startTailing() {
	ss.mu.Lock()
	ss.tailing = true
	ss.mu.Unlock()
}

// keepTail opens a tail request when the session is tailing, none is open,
// and the buffer is empty. A failed publish is left for the next Poll.
func (ss *session) keepTail(expires time.Duration) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed || !ss.tailing || ss.tail != "" || ss.tailEnd != nil || len(ss.buf) > 0 || expires < time.Second {
		return
	}
	ss.next++
	reply := ss.prefix + "." + strconv.FormatUint(ss.next, 10)
	hb := expires / 3
	req := fmt.Appendf(nil, `{"batch":%d,"expires":%d,"idle_heartbeat":%d}`, tailBatch, expires.Nanoseconds(), hb.Nanoseconds())
	if err := ss.nc.PublishRequest(ss.pull, reply, req); err != nil {
		return
	}
	ss.tail, ss.tailLeft, ss.tailHB, ss.lastSeen = reply, tailBatch, hb, time.Now()
}

// trouble reports why the session cannot go on ("" if it can): the
// connection reconnected, the server ended the tail request with an
// error, or the tail request went silent.
func (ss *session) trouble() string {
	if ss.nc.Stats().Reconnects != ss.reconnects {
		return "the connection reconnected"
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.tailEnd != nil {
		return "the server ended the open pull request: " + ss.tailEnd.Error()
	}
	if ss.tail != "" && time.Since(ss.lastSeen) > tailSilenceFactor*ss.tailHB+time.Second {
		return "the open pull request went silent (no message and no heartbeat)"
	}
	return ""
}

// ready reports whether a Wait can return: deliveries are buffered, the
// tail request ended (Poll opens another) or trouble. Otherwise changed is
// closed when anything arrives.
func (ss *session) ready() (ok bool, changed <-chan struct{}) {
	ss.mu.Lock()
	r := len(ss.buf) > 0 || (ss.tailing && ss.tail == "") || ss.closed
	ss.waitFor(ss.delivered + 1)
	changed = ss.changed
	ss.mu.Unlock()
	return r || ss.trouble() != "", changed
}

func (ss *session) isTailing() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.tailing && !ss.closed
}

// close ends the session: the subscription goes, so nothing delivered to
// its requests afterwards reaches anyone. Safe from any goroutine, more
// than once.
func (ss *session) close() {
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		return
	}
	ss.closed = true
	ss.buf = nil
	ss.mu.Unlock()
	close(ss.done)
	_ = ss.sub.Unsubscribe()
}
