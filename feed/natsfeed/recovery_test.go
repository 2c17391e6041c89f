package natsfeed_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/internal/natsembed"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
	"github.com/controlfeed/controlfeed/outbox"
)

// Recovered is closed when the connection comes back after the broker
// restarted, for the Source and for the Sink.
func TestRecovered_Reconnect(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	sink := openSink(ctx, t, cfg)
	src := openSource(ctx, t, cfg)
	var r feed.Recoverer = src
	sch, kch := r.Recovered(), sink.Recovered()
	if sch != src.Recovered() {
		t.Fatal("Recovered returned a new channel without a recovery in between")
	}
	select {
	case <-sch:
		t.Fatal("Recovered closed before any outage")
	default:
	}
	natsembed.RestartForTest(t, srv)
	for name, ch := range map[string]<-chan struct{}{"source": sch, "sink": kch} {
		select {
		case <-ch:
		case <-time.After(30 * time.Second): // a deadlock guard, not a timing assertion
			t.Fatalf("the %s's Recovered channel was not closed after the broker restarted", name)
		}
	}
	if src.Recovered() == sch {
		t.Fatal("after a recovery Recovered returned the closed channel again")
	}
}

// recoveryRig is a producer (outbox + pump) and one node (applier) on a
// jetstream feed, with timestamps of what they did.
type recoveryRig struct {
	t       *testing.T
	prod    *sql.DB
	node    *sql.DB
	pump    *outbox.Pump
	applier *applier.Applier
	seq     atomic.Int64
}

func newRecoveryRig(ctx context.Context, t *testing.T, cfg feed.NATSConfig) *recoveryRig {
	dir := t.TempDir()
	open := func(name string) *sql.DB {
		db, err := sqlitedb.Open(ctx, filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	r := &recoveryRig{t: t, prod: open("producer.db"), node: open("node.db")}
	if err := outbox.Migrate(ctx, r.prod); err != nil {
		t.Fatal(err)
	}
	if err := applier.Migrate(ctx, r.node); err != nil {
		t.Fatal(err)
	}
	sink := openSink(ctx, t, cfg)
	var err error
	if r.pump, err = outbox.NewPump(r.prod, sink, nil); err != nil {
		t.Fatal(err)
	}
	var log *slog.Logger
	if os.Getenv("CONTROLFEED_RECOVERY_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	src, err := natsfeed.NewSource(ctx, cfg, &natsfeed.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	noop := func(context.Context, *sql.Tx, controlevent.Event, []byte) error { return nil }
	if r.applier, err = applier.New(r.node, src, nil, &applier.Config{Logger: log, Handlers: map[string]applier.Handler{"test.put": noop}}); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *recoveryRig) run(ctx context.Context) func() {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = r.pump.Run(ctx) })
	wg.Go(func() { _ = r.applier.Run(ctx) })
	return func() { cancel(); wg.Wait() }
}

// commit appends one event to the outbox in its own transaction.
func (r *recoveryRig) commit(ctx context.Context) {
	tx, err := r.prod.BeginTx(ctx, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	defer tx.Rollback()
	if err := outbox.Append(ctx, tx, newEvent()); err != nil {
		r.t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		r.t.Fatal(err)
	}
	r.seq.Add(1)
	r.pump.Notify()
}

// waitApplied waits until the node's cursor reaches n and returns when it
// saw it.
func (r *recoveryRig) waitApplied(ctx context.Context, n uint64, guard time.Duration) time.Time {
	deadline := time.Now().Add(guard)
	for {
		c, err := applier.ReadCursor(ctx, r.node)
		if err != nil {
			r.t.Fatal(err)
		}
		if c >= n {
			return time.Now()
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("the node applied %d of %d events (status %+v, pump %+v)", c, n, r.applier.Status(), r.pump.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

// waitPublished waits until the pump has published anything after since.
func (r *recoveryRig) waitPublished(since time.Time, guard time.Duration) time.Time {
	deadline := time.Now().Add(guard)
	for {
		if st := r.pump.Stats(); st.LastPublishAt.After(since) {
			return st.LastPublishAt
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("the pump published nothing after the broker came back: %+v", r.pump.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

// outage commits an event every 100ms for d while the broker is away, so
// the pump and the node both fail and back off for d.
func (r *recoveryRig) outage(ctx context.Context, d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		r.commit(ctx)
		time.Sleep(100 * time.Millisecond)
	}
}

// TestRecovery_BrokerRestart measures how soon the pipeline resumes after
// a single broker is stopped for a few seconds and started again: the time
// from the restart to the pump's first publish, and to the node having
// applied everything committed meanwhile (3s of outage; 12s, past every
// backoff cap, with CONTROLFEED_MEASURE_RECOVERY=1). It logs the figures (see
// docs/PERFORMANCE.md) and asserts only that both happen, within a
// deadlock guard; the backoff resets themselves are asserted by the pump's
// and the applier's own tests.
func TestRecovery_BrokerRestart(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	r := newRecoveryRig(ctx, t, cfg)
	stop := r.run(ctx)
	defer stop()
	r.commit(ctx)
	r.waitApplied(ctx, 1, 30*time.Second)

	outage := 3 * time.Second
	if measure() {
		outage = 12 * time.Second // past both backoff caps
	}
	start := natsembed.StopForTest(t, srv)
	r.outage(ctx, outage)
	n := uint64(r.seq.Load())
	start()
	restarted := time.Now() // accepting clients
	pub := r.waitPublished(restarted, 60*time.Second)
	applied := r.waitApplied(ctx, n, 60*time.Second)
	t.Logf("broker down %v with %d events committed meanwhile; after the restart: first publish +%v, node applied all +%v",
		outage, n-1, pub.Sub(restarted).Round(time.Millisecond), applied.Sub(restarted).Round(time.Millisecond))
}

// TestRecovery_QuorumLoss measures, on a 3-server cluster with an R3
// stream, how soon the pipeline resumes after two servers were down (no
// quorum) for a few seconds and were started again: from the restart to
// the stream having a leader, to the pump's first publish and to the node
// having applied everything. It starts a cluster, so it runs only with
// CONTROLFEED_MEASURE_RECOVERY=1.
func TestRecovery_QuorumLoss(t *testing.T) {
	if !measure() {
		t.Skip("set CONTROLFEED_MEASURE_RECOVERY=1 to measure recovery on a 3-server cluster")
	}
	ctx := t.Context()
	members := natsembed.StartClusterForTest(t, 3)
	cfg := testConfig(members[0])
	cfg.URLs = []string{members[0].ClientURL(), members[1].ClientURL(), members[2].ClientURL()}
	cfg.Replicas = 3
	r := newRecoveryRig(ctx, t, cfg)
	stop := r.run(ctx)
	defer stop()
	r.commit(ctx)
	r.waitApplied(ctx, 1, 60*time.Second)

	outage := 12 * time.Second
	start1 := natsembed.StopForTest(t, members[1])
	start2 := natsembed.StopForTest(t, members[2])
	r.outage(ctx, outage)
	n := uint64(r.seq.Load())
	start1()
	start2()
	restarted := time.Now() // both accepting clients
	leader := waitLeader(ctx, t, members[0].ClientURL(), cfg.Stream, 60*time.Second)
	pub := r.waitPublished(restarted, 60*time.Second)
	applied := r.waitApplied(ctx, n, 60*time.Second)
	t.Logf("quorum lost %v with %d events committed meanwhile; after the restart: stream leader +%v, first publish +%v (leader +%v), node applied all +%v (leader +%v)",
		outage, n-1, leader.Sub(restarted).Round(time.Millisecond),
		pub.Sub(restarted).Round(time.Millisecond), pub.Sub(leader).Round(time.Millisecond),
		applied.Sub(restarted).Round(time.Millisecond), applied.Sub(leader).Round(time.Millisecond))
}

// measure reports whether CONTROLFEED_MEASURE_RECOVERY is set: the
// recovery tests then use outages long enough for every backoff to reach
// its cap, and the cluster variant runs.
func measure() bool { return os.Getenv("CONTROLFEED_MEASURE_RECOVERY") != "" }

// waitLeader polls the stream's info every 10ms until it names a leader
// with its replicas current, and returns when it saw that.
func waitLeader(ctx context.Context, t *testing.T, url, stream string, guard time.Duration) time.Time {
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(guard)
	for {
		rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		st, err := js.Stream(rctx, stream)
		cancel()
		if err == nil {
			if ci := st.CachedInfo().Cluster; ci != nil && ci.Leader != "" {
				return time.Now()
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream %s has no leader: %v", stream, fmt.Sprint(err))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
