package natsfeed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultLeaseTTL is the lifetime of a node name's lease when Options.LeaseTTL
// is zero: how long a node name stays taken after its holder vanished
// without a trace (a partition, a paused VM). A holder that exits, even by
// kill -9, is noticed at once (see the package doc).
const DefaultLeaseTTL = 10 * time.Second

// LeaseBucket returns the name of the key/value bucket that holds the node
// name leases of the feed on stream: "CFNODES_" + DurableName(stream).
func LeaseBucket(stream string) string { return "CFNODES_" + DurableName(stream) }

// leaseRecord is the value of a lease: who holds the node name.
type leaseRecord struct {
	Owner string    `json:"owner"` // random per Source
	Node  string    `json:"node"`
	Host  string    `json:"host"`
	PID   int       `json:"pid"`
	Since time.Time `json:"since"`
	// Ping is a subject the holder answers on while its connection is up.
	Ping string `json:"ping"`
}

// lease is a durable Source's claim on its node name: a key in a JetStream
// key/value bucket with a TTL, created only if absent and renewed by
// compare-and-set on its revision. See the package doc, "One consumer per
// node name".
type lease struct {
	c        *conn
	node     string
	consumer string
	key      string
	rec      leaseRecord
	val      []byte

	mu         sync.Mutex
	closed     bool
	kv         jetstream.KeyValue
	ttl        time.Duration
	held       bool
	rev        uint64
	renewed    time.Time // last successful create or renewal (monotonic)
	reconnects uint64    // the connection's reconnect count at that time
	ping       *nats.Subscription
	stop       chan struct{} // closes to end the renewal loop
	loopDone   chan struct{}

	// onLost, if set, is called (with mu held) when the renewal loop finds
	// the lease taken over, so the Source stops receiving at once.
	onLost func()
}

func newLease(c *conn, consumer string) *lease {
	host, _ := os.Hostname()
	l := &lease{c: c, node: c.cfg.NodeName, consumer: consumer, key: consumer, ttl: c.opts.LeaseTTL}
	var id [16]byte
	_, _ = rand.Read(id[:])
	l.rec = leaseRecord{Owner: hex.EncodeToString(id[:]), Node: c.cfg.NodeName, Host: host, PID: os.Getpid(), Ping: c.nc.NewInbox()}
	return l
}

// ensure makes sure this Source holds the lease before it reads: at no cost
// while the lease was renewed within half its TTL on the same connection,
// else by renewing or acquiring it. acquired is true when the lease was
// (re)acquired, so the caller reconciles the consumer. It returns a
// *NodeInUseError while another live process holds it.
func (l *lease) ensure(ctx context.Context) (acquired bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held && time.Since(l.renewed) < l.ttl/2 && l.c.nc.Stats().Reconnects == l.reconnects {
		return false, nil
	}
	if l.held {
		err := l.renewLocked(ctx)
		if err == nil {
			return false, nil
		}
		switch {
		case leaseLost(err):
			l.c.log.Warn("natsfeed: lost the node name's lease; another process took it over", "node", l.node)
		case errors.Is(err, jetstream.ErrBucketNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
			l.kv = nil // deleted by an operator: create it again
		default:
			return false, fmt.Errorf("natsfeed: renew the lease of node %q%s: %w", l.node, l.c.timeoutState(err), err)
		}
		l.held = false
	}
	return l.acquireLocked(ctx)
}

func (l *lease) acquireLocked(ctx context.Context) (bool, error) {
	rctx, cancel := l.c.reqCtx(ctx)
	defer cancel()
	if err := l.setupLocked(rctx); err != nil {
		return false, err
	}
	l.rec.Since = time.Now().UTC()
	l.val, _ = json.Marshal(l.rec)
	first := time.Now()
	for attempt := 0; attempt < 3; attempt++ {
		sent := time.Now()
		rev, err := l.kv.Create(rctx, l.key, l.val)
		if err == nil {
			l.gotLocked(rev, sent)
			return true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return false, fmt.Errorf("natsfeed: take the lease of node %q: %w", l.node, err)
		}
		e, err := l.kv.Get(rctx, l.key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // released meanwhile
		}
		if err != nil {
			return false, fmt.Errorf("natsfeed: read the lease of node %q: %w", l.node, err)
		}
		var other leaseRecord
		_ = json.Unmarshal(e.Value(), &other)
		if other.Owner == l.rec.Owner {
			// Ours: a create whose answer was lost.
			l.gotLocked(e.Revision(), first)
			return true, nil
		}
		if !l.holderGone(rctx, other) {
			return false, &NodeInUseError{Node: l.node, Consumer: l.consumer, Host: other.Host, PID: other.PID, Since: other.Since}
		}
		l.c.log.Warn("natsfeed: taking over the node name's lease from a process that is gone",
			"node", l.node, "holder_host", other.Host, "holder_pid", other.PID)
		if err := l.kv.Delete(rctx, l.key, jetstream.LastRevision(e.Revision())); err != nil &&
			!errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return false, fmt.Errorf("natsfeed: release the stale lease of node %q: %w", l.node, err)
		}
	}
	return false, fmt.Errorf("natsfeed: take the lease of node %q: it changed hands during three attempts; try again", l.node)
}

// setupLocked opens (or creates) the bucket and subscribes the ping
// subject, once.
func (l *lease) setupLocked(ctx context.Context) error {
	if l.closed {
		return errors.New("natsfeed: lease: closed")
	}
	if l.kv == nil {
		bucket := LeaseBucket(l.c.cfg.Stream)
		kv, err := l.c.js.KeyValue(ctx, bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = l.createBucket(ctx, bucket)
		}
		if err != nil {
			return fmt.Errorf("natsfeed: lease bucket %q for node %q: %w", bucket, l.node, err)
		}
		if st, err := kv.Status(ctx); err == nil && st.TTL() > 0 && st.TTL() < l.ttl {
			l.ttl = st.TTL() // created by someone else: renew often enough for it
		}
		l.kv = kv
	}
	if l.ping == nil {
		sub, err := l.c.nc.Subscribe(l.rec.Ping, func(m *nats.Msg) { _ = m.Respond(nil) })
		if err != nil {
			return fmt.Errorf("natsfeed: lease of node %q: subscribe %s: %w", l.node, l.rec.Ping, err)
		}
		// The subscription must be known to the server before the lease
		// names it, or a peer's ping could find no one.
		if err := l.c.nc.FlushWithContext(ctx); err != nil {
			_ = sub.Unsubscribe()
			return fmt.Errorf("natsfeed: lease of node %q: flush: %w", l.node, err)
		}
		l.ping = sub
	}
	return nil
}

// createBucket creates the lease bucket with the feed stream's replica
// count, so that it is as replicated as the feed whatever this node's own
// configuration says; while the stream does not exist it creates nothing
// and fails with the error of Poll for a missing stream.
func (l *lease) createBucket(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	st, err := l.c.js.Stream(ctx, l.c.cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, noStreamError(l.c.cfg.Stream)
	}
	if err != nil {
		return nil, fmt.Errorf("natsfeed: stream %q: %w", l.c.cfg.Stream, err)
	}
	kv, err := l.c.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "controlfeed node name leases: one consuming process per node name",
		TTL:         l.ttl,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    st.CachedInfo().Config.Replicas,
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = l.c.js.KeyValue(ctx, bucket)
	}
	return kv, err
}

func (l *lease) gotLocked(rev uint64, sent time.Time) {
	l.held, l.rev = true, rev
	l.renewed, l.reconnects = sent, l.c.nc.Stats().Reconnects
	if l.stop == nil {
		l.stop, l.loopDone = make(chan struct{}), make(chan struct{})
		go l.renewLoop(l.stop, l.loopDone)
	}
}

func (l *lease) renewLocked(ctx context.Context) error {
	rctx, cancel := l.c.reqCtx(ctx)
	defer cancel()
	reconnects := l.c.nc.Stats().Reconnects
	sent := time.Now() // the server's TTL starts after this
	rev, err := l.kv.Update(rctx, l.key, l.val, l.rev)
	if err != nil {
		return err
	}
	l.rev, l.renewed, l.reconnects = rev, sent, reconnects
	return nil
}

// validFor is how long the held lease lasts at least, by this process's
// clock, if it is not renewed (0 when not held).
func (l *lease) validFor() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.held {
		return 0
	}
	return max(0, l.ttl-time.Since(l.renewed))
}

// leaseLost reports a renewal refused because the lease is no longer ours.
func leaseLost(err error) bool {
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound) ||
		errors.Is(err, jetstream.ErrKeyDeleted)
}

// renewLoop renews the held lease every third of its TTL, so it stays
// alive while the node waits for events without polling.
func (l *lease) renewLoop(stop, done chan struct{}) {
	defer close(done)
	for {
		l.mu.Lock()
		every := l.ttl / 3
		l.mu.Unlock()
		t := time.NewTimer(every)
		select {
		case <-stop:
			t.Stop()
			return
		case <-t.C:
		}
		l.mu.Lock()
		if l.held && !l.closed {
			err := l.renewLocked(context.Background())
			if leaseLost(err) {
				l.c.log.Warn("natsfeed: lost the node name's lease; another process took it over", "node", l.node)
				l.held = false
				if l.onLost != nil {
					l.onLost()
				}
			} else if err != nil {
				l.c.log.Debug("natsfeed: lease renewal failed; retrying", "node", l.node, "err", err)
			}
		}
		l.mu.Unlock()
	}
}

// holderGone reports whether the holder of other is certainly gone: its
// ping subject has no responders twice in a row, a quarter second apart
// (the server drops a dead client's subscriptions when its connection
// closes). A holder that answers, or a ping that times out, counts as
// alive: its lease then expires by TTL if it is really gone.
func (l *lease) holderGone(ctx context.Context, other leaseRecord) bool {
	if other.Ping == "" {
		return false
	}
	for i := 0; i < 2; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return false
			case <-time.After(250 * time.Millisecond):
			}
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := l.c.nc.RequestWithContext(pctx, other.Ping, nil)
		cancel()
		if !errors.Is(err, nats.ErrNoResponders) {
			return false
		}
	}
	return true
}

// close stops the renewal and releases the lease (best effort, bounded), so
// the next process for this node name takes it over at once.
func (l *lease) close() {
	l.mu.Lock()
	l.closed = true
	stop, done := l.stop, l.loopDone
	l.stop = nil
	l.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held {
		ctx, cancel := context.WithTimeout(context.Background(), min(l.c.opts.RequestTimeout, 2*time.Second))
		_ = l.kv.Delete(ctx, l.key, jetstream.LastRevision(l.rev))
		cancel()
		l.held = false
	}
	if l.ping != nil {
		_ = l.ping.Unsubscribe()
		l.ping = nil
	}
}
