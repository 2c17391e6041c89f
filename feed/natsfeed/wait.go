package natsfeed

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/controlfeed/controlfeed/feed"
)

// waitRecheck is how long Wait blocks on the subscription before it asks
// the server for the stream's head again. A core subscription can miss
// messages (a reconnect, a slow consumer) and its delivery may precede the
// stream storing the message; this bounds how long either can delay a node.
const waitRecheck = time.Second

// waitRecheckSoon is the first re-check delay after a wake-up that Poll did
// not explain: the subject saw a message but the stream's head was not past
// the cursor yet (stored a moment later, or a duplicate the stream
// discarded). The core delivery usually precedes the store by well under a
// millisecond, so Wait re-checks after 1 ms, then 2, 4 and 8 ms (a
// duplicate costs those few head requests), then every waitRecheck.
const waitRecheckSoon = time.Millisecond

// waitRecheckSoonMax is the last of the doubling re-check delays.
const waitRecheckSoonMax = 8 * time.Millisecond

// waitConsumerLag is how long Wait pauses when the stream's head is already
// past since but the last Poll returned nothing: the server can answer a
// no-wait fetch before the consumer has noticed a message just stored.
const waitConsumerLag = time.Millisecond

// waker is the Source's long-lived core NATS subscription on the subject,
// used only as a wake-up signal: every message published on the subject
// (stored or not) bumps gen and fills sig.
type waker struct {
	mu  sync.Mutex // guards sub's creation and teardown
	sub *nats.Subscription

	gen atomic.Uint64 // messages seen on the subject
	sig chan struct{} // capacity 1: "gen moved"

	// polled is gen as it was when the last Poll started: a message seen
	// after it may not have been fetched yet.
	polled atomic.Uint64
	// checked is gen as it was when Wait last asked for the head: a
	// message seen after it may be stored without Poll having seen it.
	checked atomic.Uint64
	// head is the highest stream head Wait has read.
	head atomic.Uint64
	// settled is a head that Poll found holds nothing of the feed's after
	// the cursor it polled from (the tail is deleted or on another
	// subject): Wait does not treat it as events waiting.
	settled atomic.Uint64
}

func newWaker() *waker { return &waker{sig: make(chan struct{}, 1)} }

func (w *waker) onMsg(*nats.Msg) {
	w.gen.Add(1)
	select {
	case w.sig <- struct{}{}:
	default:
	}
}

// ensure subscribes once. fresh reports that the subscription is new, so
// messages published before it are unknown to gen.
func (w *waker) ensure(ctx context.Context, c *conn) (fresh bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sub != nil && w.sub.IsValid() {
		return false, nil
	}
	sub, err := c.nc.Subscribe(c.cfg.Subject, w.onMsg)
	if err != nil {
		return false, fmt.Errorf("subscribe %q: %w", c.cfg.Subject, err)
	}
	// Wake-ups carry no data: never let a slow Wait make the connection a
	// slow consumer.
	_ = sub.SetPendingLimits(-1, -1)
	fctx, cancel := c.reqCtx(ctx)
	defer cancel()
	if err := c.nc.FlushWithContext(fctx); err != nil {
		_ = sub.Unsubscribe()
		return false, fmt.Errorf("flush: %w", err)
	}
	w.sub = sub
	return true, nil
}

func (w *waker) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sub != nil {
		_ = w.sub.Unsubscribe()
		w.sub = nil
	}
}

// pollStarted records that a Poll is about to fetch.
func (w *waker) pollStarted() { w.polled.Store(w.gen.Load()) }

// Wait blocks until the stream may hold a message after since, or ctx is
// done (returning ctx's error). Once a Poll has caught up, Wait waits on
// the reading session's open pull request (see waitSession) and costs no
// request at all; until then it works as follows. It keeps one core NATS subscription on the
// subject for the Source's lifetime as the wake-up signal, so in steady
// state it costs no round trip: it returns at once if a message was
// published on the subject since the last Poll started, else waits for the
// next one. It asks the server for the stream's head (one request) only on
// the first call, when a message seen on the subject was not yet explained
// by a Poll, and once per second while blocked (a core subscription may
// miss messages across a reconnect). If the head it last read is past since
// (the server answered the last Poll before its consumer saw a message just
// stored), it returns after a millisecond. A return does not promise an event:
// the message may have been a duplicate the stream discarded (a spurious
// wake-up; Poll then returns nothing and the caller waits again). Wait may
// run concurrently with Poll and Ack.
func (s *Source) Wait(ctx context.Context, since uint64) error {
	if s.isClosed() {
		return fmt.Errorf("natsfeed: wait %d: %w", since, feed.ErrClosed)
	}
	if ss := s.live.Load(); ss != nil && ss.isTailing() {
		return s.waitSession(ctx, ss, since)
	}
	w := s.wake
	fresh, err := w.ensure(ctx, s.c)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("natsfeed: wait %d: %w", since, err)
	}
	head := func() (bool, error) {
		w.checked.Store(w.gen.Load())
		h, err := s.Head(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			return false, fmt.Errorf("natsfeed: wait %d: %w", since, err)
		}
		if h > w.head.Load() {
			w.head.Store(h)
		}
		return h > since, nil
	}
	if h := w.head.Load(); h > since && h > w.settled.Load() {
		// The stream holds events after since that the last Poll did not
		// return: its consumer is a moment behind the stream.
		t := time.NewTimer(waitConsumerLag)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.sig:
		case <-t.C:
		}
		return nil
	}
	if fresh {
		if ok, err := head(); ok || err != nil {
			return err
		}
	}
	recheck := waitRecheck
	for {
		g := w.gen.Load()
		if g > w.polled.Load() {
			return nil // published after the last Poll started
		}
		if g > w.checked.Load() {
			// Seen before the last Poll started, yet that Poll may have
			// fetched before the stream stored it.
			ok, err := head()
			if ok || err != nil {
				return err
			}
			recheck = waitRecheckSoon
			continue
		}
		t := time.NewTimer(recheck)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-w.sig:
			t.Stop()
		case <-t.C:
			if recheck < waitRecheckSoonMax {
				recheck *= 2
			} else {
				recheck = waitRecheck
			}
			if ok, err := head(); ok || err != nil {
				return err
			}
		}
	}
}

// waitSession is Wait while the Source's reading session keeps a tail
// request open (see session): it costs no request at all. It returns when
// a delivery has arrived, when the session needs Poll (its tail request
// ended, it is in trouble or closed), when since is not where the last Poll
// left the consumer (Poll then repositions it), or when ctx is done. A
// duplicate the stream discarded is never delivered, so it wakes nothing.
func (s *Source) waitSession(ctx context.Context, ss *session, since uint64) error {
	if s.livePos.Load() != since {
		return nil
	}
	t := time.NewTicker(waitRecheck)
	defer t.Stop()
	for {
		ok, changed := ss.ready()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		case <-ss.done:
			return nil
		case <-t.C: // re-check for a reconnect or a silent tail
		}
	}
}
