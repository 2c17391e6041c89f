// Package demo runs controlfeed end to end on one machine with nothing to
// set up: a producer and a fleet of nodes, each with its own SQLite database,
// in this process, connected by a real feed (an embedded NATS JetStream
// server, or a file feed in a temporary directory). It publishes a stream of
// kv changes on the producer, shows progress, then verifies that every node
// ended up identical to the producer with every event applied exactly once,
// and reports throughput and latency. "controlfeed demo" is its command.
//
// # What is measured
//
// Commit time is taken on the producer right after kv.Put or kv.Delete
// returns, i.e. just after its SQLite transaction (row + outbox event)
// committed. Apply time is taken on each node when the applier acknowledges
// the event to the feed source, which it does only after the SQLite
// transaction that applied the event, recorded it in applied_events and
// advanced the cursor has committed (the source is wrapped to observe this;
// see node.Config.WrapSource). The latency is the difference: producer
// commit -> durable on the node, including the pump, the broker, the node's
// wake-up, the artifact fetch and verification, and the apply. Both clocks
// are the same process's monotonic clock.
//
// # Verdict
//
// The demo passes when, for every node: its kv.Digest equals the
// producer's; controlfeed_applied_events holds exactly the feed's events,
// each once, each with outcome "applied"; and its cursor equals the feed's
// head. The feed itself must hold each of the producer's events exactly
// once. Anything else is reported line by line and Run returns an error
// wrapping ErrDiverged.
//
// # Backends
//
// The demo opens backends by their registered names ("jetstream", "file");
// the program must blank-import them (package main does, in backends.go).
package demo

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/internal/natsembed"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/kv"
	"github.com/controlfeed/controlfeed/outbox"
)

// Feed names accepted by Options.Feed: the registered names of the backends
// the demo uses for both the feed and the artifact store.
const (
	FeedJetStream = "jetstream"
	FeedFile      = "file"
)

// Defaults of Options.
const (
	DefaultNodes   = 3
	DefaultEvents  = 3000
	DefaultFeed    = FeedJetStream
	DefaultTimeout = 2 * time.Minute
)

// ErrDiverged is wrapped by Run's error when verification found a
// difference between a node and the producer (or the feed).
var ErrDiverged = errors.New("a node diverged from the producer")

// Options configures Run. Zero values select the defaults.
type Options struct {
	// Nodes is the number of fleet nodes; default 3.
	Nodes int
	// Events is the number of kv changes the producer makes (each one
	// event); default 3000.
	Events int
	// Feed is FeedJetStream (an embedded NATS server on a random local
	// port: JetStream feed and Object Store artifacts) or FeedFile (a file
	// feed and a file artifact store in Dir); default FeedJetStream.
	Feed string
	// Dir holds the databases and the feed. Empty means a new temporary
	// directory, removed when Run returns unless Keep.
	Dir string
	// Keep leaves a temporary Dir in place (Run prints its path).
	Keep bool
	// Rate limits the producer to this many changes per second; 0 = as fast
	// as it can.
	Rate float64
	// Seed makes the change stream reproducible; 0 picks one from the clock
	// (printed in the report).
	Seed uint64
	// Timeout bounds the wait for the nodes to catch up after the last
	// change; default 2m.
	Timeout time.Duration

	// Out receives the report and the verdict line; nil discards.
	Out io.Writer
	// Progress receives live progress while the demo runs; nil shows none.
	Progress io.Writer
	// Bars draws progress bars on Progress (for a terminal); otherwise a
	// progress line is printed every second.
	Bars bool
	// Logger receives the nodes' and the server's logs; nil discards.
	Logger *slog.Logger

	// Tamper, when set, is called for each node after the nodes caught up
	// and before verification, with the node's index (0-based) and
	// database. Tests use it to make a node diverge on purpose.
	Tamper func(ctx context.Context, node int, db *sql.DB) error
}

func (o *Options) setDefaults() {
	o.Nodes = cmp.Or(o.Nodes, DefaultNodes)
	o.Events = cmp.Or(o.Events, DefaultEvents)
	o.Feed = cmp.Or(o.Feed, DefaultFeed)
	o.Timeout = cmp.Or(o.Timeout, DefaultTimeout)
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Seed == 0 {
		o.Seed = uint64(time.Now().UnixNano())
	}
}

// Validate reports options Run cannot use.
func (o Options) Validate() error {
	switch {
	case o.Nodes < 0 || o.Nodes > 64:
		return fmt.Errorf("demo: options: nodes %d is not in 1..64", o.Nodes)
	case o.Events < 0:
		return fmt.Errorf("demo: options: events %d is negative", o.Events)
	case o.Rate < 0:
		return fmt.Errorf("demo: options: rate %v is negative", o.Rate)
	case o.Timeout < 0:
		return fmt.Errorf("demo: options: timeout %v is negative", o.Timeout)
	case o.Feed != "" && o.Feed != FeedJetStream && o.Feed != FeedFile:
		return fmt.Errorf("demo: options: feed %q: want %s or %s", o.Feed, FeedJetStream, FeedFile)
	}
	return nil
}

// Result is what Run measured and verified.
type Result struct {
	// Dir is the data directory (gone after Run unless kept or given).
	Dir string
	// Digest is the producer's kv.Digest.
	Digest string
	// Events is the number of events published.
	Events int
	// Nodes holds each node's end state.
	Nodes []NodeResult
	// Problems lists every verification failure; empty = pass.
	Problems []string
	// Commit is how long the producer took to commit every change; Publish
	// is from the first commit until the pump had published them all; Apply
	// is from the first commit until the slowest node had applied them all.
	Commit, Publish, Apply time.Duration
	// Latency summarizes commit -> applied over every (node, event).
	Latency Latency
}

// Passed reports whether verification found nothing wrong.
func (r *Result) Passed() bool { return len(r.Problems) == 0 }

// NodeResult is one node's end state.
type NodeResult struct {
	Name    string
	Cursor  uint64
	Applied int
	Digest  string
}

// Latency is a distribution of commit -> applied latencies.
type Latency struct {
	N                   int
	P50, P99, P999, Max time.Duration
}

// fleetNode is one running node of the demo.
type fleetNode struct {
	name  string
	n     *node.Node
	timed *timedSource
}

// Run runs the demo until it has verified the outcome, then stops every
// node and the server, and returns the result. It returns an error wrapping
// ErrDiverged (with the result) when verification failed, ctx's error when
// ctx ended first, and other errors when something could not start. It
// writes the report to Options.Out either way.
func Run(ctx context.Context, opts Options) (_ *Result, err error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	o := opts
	o.setDefaults()
	dir := o.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "controlfeed-demo-"); err != nil {
			return nil, fmt.Errorf("demo: data directory: %w", err)
		}
		if !o.Keep {
			defer os.RemoveAll(dir)
		}
	}
	res := &Result{Dir: dir, Events: o.Events}

	var fcfg feed.SourceConfig
	var acfg artifact.Config
	where := ""
	switch o.Feed {
	case FeedJetStream:
		srv, err := natsembed.Start(natsembed.Options{StoreDir: filepath.Join(dir, "nats"),
			Logger: o.Logger.With("component", "nats-server"), ServerName: "controlfeed-demo"})
		if err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
		defer srv.Shutdown() // deferred first: runs after every node closed
		fcfg.NATS.URLs = []string{srv.ClientURL()}
		acfg.NATS.URLs = []string{srv.ClientURL()}
		where = "JetStream feed and Object Store artifacts on an embedded NATS server at " + srv.ClientURL()
	case FeedFile:
		fcfg.FileDir = filepath.Join(dir, "feed")
		acfg.Dir = filepath.Join(dir, "artifacts")
		if err := os.MkdirAll(fcfg.FileDir, 0o755); err != nil {
			return nil, fmt.Errorf("demo: feed directory: %w", err)
		}
		where = "file feed " + fcfg.FileDir + " and file artifact store " + acfg.Dir
	}
	fmt.Fprintf(o.Out, "controlfeed demo: 1 producer + %d nodes, %d changes, seed %d\n", o.Nodes, o.Events, o.Seed)
	fmt.Fprintf(o.Out, "  %s\n", where)
	if o.Keep || o.Dir != "" {
		fmt.Fprintf(o.Out, "  data kept in %s\n", dir)
	}

	runCtx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	var opened []*node.Node
	defer func() {
		cancel(nil)
		wg.Wait()
		for _, n := range opened {
			n.Close()
		}
	}()
	start := func(cfg *node.Config) (*node.Node, error) {
		cfg.ArtifactStore = o.Feed
		cfg.Artifact = acfg
		cfg.Logger = o.Logger
		n, err := node.Open(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("demo: start %s: %w", cfg.NodeName, err)
		}
		opened = append(opened, n)
		wg.Go(func() {
			if err := n.Run(runCtx); err != nil {
				cancel(fmt.Errorf("demo: %s stopped: %w", cfg.NodeName, err))
			}
		})
		return n, nil
	}
	producer, err := start(&node.Config{DB: filepath.Join(dir, "producer.db"), FeedSink: o.Feed, Feed: fcfg, NodeName: "producer"})
	if err != nil {
		return nil, err
	}
	fleet := make([]*fleetNode, o.Nodes)
	for i := range fleet {
		fn := &fleetNode{name: fmt.Sprintf("node%d", i+1)}
		cfg := fcfg
		cfg.NATS.NodeName = fn.name
		fn.n, err = start(&node.Config{DB: filepath.Join(dir, fn.name+".db"), FeedSource: o.Feed, Feed: cfg, NodeName: fn.name,
			WrapSource: func(src feed.Source) feed.Source { fn.timed = newTimedSource(src); return fn.timed.source() }})
		if err != nil {
			return nil, err
		}
		fleet[i] = fn
	}

	prog := newProgress(o, fleet)
	var committed atomic.Int64
	progCtx, stopProg := context.WithCancel(runCtx)
	progDone := make(chan struct{})
	go func() { defer close(progDone); prog.run(progCtx, &committed, producer) }()
	finishProgress := func(ok bool) {
		stopProg()
		<-progDone
		prog.finish(ok)
	}

	t0 := time.Now()
	commitAt, err := produce(runCtx, o, producer, &committed)
	if err != nil {
		finishProgress(false)
		return nil, cmp.Or(context.Cause(runCtx), err)
	}
	res.Commit = time.Since(t0)

	publishedAt, err := waitConverged(runCtx, o, producer, fleet, t0)
	finishProgress(err == nil)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		res.Problems = append(res.Problems, err.Error())
	} else {
		res.Publish = publishedAt.Sub(t0)
	}

	if o.Tamper != nil {
		for i, fn := range fleet {
			if err := o.Tamper(ctx, i, fn.n.DB()); err != nil {
				return nil, fmt.Errorf("demo: tamper with %s: %w", fn.name, err)
			}
		}
	}
	if err := verify(ctx, o, fcfg, producer, fleet, res); err != nil {
		return nil, err
	}
	measure(commitAt, fleet, t0, res)
	report(o, res)
	if !res.Passed() {
		return res, fmt.Errorf("demo: %w: %s", ErrDiverged, strings.Join(res.Problems, "; "))
	}
	return res, nil
}

// produce makes o.Events kv changes on the producer, each one event, and
// returns each event's commit time by EventID.
func produce(ctx context.Context, o Options, producer *node.Node, committed *atomic.Int64) (map[string]time.Time, error) {
	rng := rand.New(rand.NewPCG(o.Seed, 0x636f6e74726f6c))
	keys := max(10, o.Events/5)
	commitAt := make(map[string]time.Time, o.Events)
	live := map[string]bool{}
	var liveKeys []string
	start := time.Now()
	for i := range o.Events {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if o.Rate > 0 {
			due := start.Add(time.Duration(float64(i) / o.Rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-ctx.Done():
					t.Stop()
					return nil, ctx.Err()
				case <-t.C:
				}
			}
		}
		var id string
		if len(liveKeys) > 10 && rng.IntN(8) == 0 {
			j := rng.IntN(len(liveKeys))
			key := liveKeys[j]
			liveKeys[j] = liveKeys[len(liveKeys)-1]
			liveKeys = liveKeys[:len(liveKeys)-1]
			delete(live, key)
			ev, existed, err := kv.Delete(ctx, producer.DB(), key)
			if err != nil {
				return nil, fmt.Errorf("demo: producer: %w", err)
			}
			if !existed {
				return nil, fmt.Errorf("demo: producer: delete %q: the key did not exist", key)
			}
			id = ev.EventID
		} else {
			key := fmt.Sprintf("demo/key-%04d", rng.IntN(keys))
			ev, err := kv.Put(ctx, producer.DB(), producer.Store(), key, value(rng, i))
			if err != nil {
				return nil, fmt.Errorf("demo: producer: %w", err)
			}
			if !live[key] {
				live[key] = true
				liveKeys = append(liveKeys, key)
			}
			id = ev.EventID
		}
		commitAt[id] = time.Now()
		committed.Add(1)
		producer.Pump().Notify()
	}
	return commitAt, nil
}

// value returns the i-th change's value: mostly small, some of a few KiB,
// a few of up to 64 KiB.
func value(rng *rand.Rand, i int) []byte {
	var n int
	switch r := rng.IntN(100); {
	case r < 70:
		n = 8 + rng.IntN(248)
	case r < 95:
		n = 256 + rng.IntN(4096-256)
	default:
		n = 4096 + rng.IntN(60*1024)
	}
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := fmt.Appendf(make([]byte, 0, n), "change %d: ", i)
	for len(b) < n {
		b = append(b, alphabet[rng.IntN(len(alphabet))])
	}
	return b[:max(n, len(b))]
}

// waitConverged waits until the pump published every change and every node's
// cursor reached o.Events, and returns when the last publish was observed.
func waitConverged(ctx context.Context, o Options, producer *node.Node, fleet []*fleetNode, t0 time.Time) (time.Time, error) {
	deadline := time.Now().Add(o.Timeout)
	var publishedAt time.Time
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		if publishedAt.IsZero() && producer.Pump().Stats().Published >= uint64(o.Events) {
			publishedAt = time.Now()
		}
		done := !publishedAt.IsZero()
		for _, fn := range fleet {
			done = done && fn.n.Applier().Status().Cursor >= uint64(o.Events)
		}
		if done {
			return publishedAt, nil
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			fmt.Fprintf(&b, "not caught up %v after the last change: published %d of %d", o.Timeout,
				producer.Pump().Stats().Published, o.Events)
			for _, fn := range fleet {
				st := fn.n.Applier().Status()
				fmt.Fprintf(&b, ", %s cursor %d", fn.name, st.Cursor)
				if st.Halted != nil {
					fmt.Fprintf(&b, " (halted at %d: %s)", st.Halted.ControlVersion, st.Halted.Error)
				}
			}
			return time.Time{}, errors.New(b.String())
		}
		select {
		case <-ctx.Done():
			return time.Time{}, cmp.Or(context.Cause(ctx), ctx.Err())
		case <-tick.C:
		}
	}
}

// verify checks the feed and every node against the producer and fills
// res.Digest, res.Nodes and res.Problems. It returns an error only when it
// cannot read something.
func verify(ctx context.Context, o Options, fcfg feed.SourceConfig, producer *node.Node, fleet []*fleetNode, res *Result) error {
	problem := func(format string, args ...any) { res.Problems = append(res.Problems, fmt.Sprintf(format, args...)) }
	digest, err := kv.Digest(ctx, producer.DB())
	if err != nil {
		return fmt.Errorf("demo: verify producer: %w", err)
	}
	res.Digest = digest
	counts, err := outbox.ReadCounts(ctx, producer.DB())
	if err != nil {
		return fmt.Errorf("demo: verify producer: %w", err)
	}
	if counts.Pending != 0 || counts.Dead != 0 {
		problem("producer outbox: %d pending, %d dead rows, want 0 and 0", counts.Pending, counts.Dead)
	}
	produced, err := queryIDs(ctx, producer.DB(), `SELECT event_id, 'published' FROM controlfeed_outbox WHERE published_control_version IS NOT NULL`)
	if err != nil {
		return fmt.Errorf("demo: verify producer: %w", err)
	}
	if len(produced) != o.Events {
		problem("producer: %d published outbox rows, want %d", len(produced), o.Events)
	}

	// Read the whole feed with a read-only source (no node name: on
	// jetstream an ephemeral consumer).
	ocfg := fcfg
	ocfg.NATS.NodeName = ""
	src, err := feed.Open(o.Feed, ocfg)
	if err != nil {
		return fmt.Errorf("demo: verify feed: %w", err)
	}
	defer func() {
		if c, ok := src.(io.Closer); ok {
			c.Close()
		}
	}()
	var head uint64
	inFeed := map[string]bool{}
	for {
		evs, err := src.Poll(ctx, head)
		if err != nil {
			return fmt.Errorf("demo: verify feed: poll after %d: %w", head, err)
		}
		if len(evs) == 0 {
			break
		}
		for _, e := range evs {
			if inFeed[e.EventID] {
				problem("feed: event %s appears twice", e.EventID)
			}
			inFeed[e.EventID] = true
			head = e.ControlVersion
		}
	}
	if len(inFeed) != len(produced) {
		problem("feed: %d distinct events, the producer published %d", len(inFeed), len(produced))
	}
	for id := range produced {
		if !inFeed[id] {
			problem("feed: the producer's event %s is missing", id)
			break
		}
	}

	for _, fn := range fleet {
		db := fn.n.DB()
		nr := NodeResult{Name: fn.name}
		if nr.Cursor, err = applier.ReadCursor(ctx, db); err != nil {
			return fmt.Errorf("demo: verify %s: %w", fn.name, err)
		}
		if nr.Digest, err = kv.Digest(ctx, db); err != nil {
			return fmt.Errorf("demo: verify %s: %w", fn.name, err)
		}
		applied, err := queryIDs(ctx, db, `SELECT event_id, outcome FROM controlfeed_applied_events`)
		if err != nil {
			return fmt.Errorf("demo: verify %s: %w", fn.name, err)
		}
		nr.Applied = len(applied)
		if nr.Cursor != head {
			problem("%s: cursor %d, feed head %d", fn.name, nr.Cursor, head)
		}
		if nr.Digest != digest {
			problem("%s: kv digest %s differs from the producer's %s", fn.name, short(nr.Digest), short(digest))
		}
		if len(applied) != len(inFeed) {
			problem("%s: %d events in applied_events, the feed holds %d", fn.name, len(applied), len(inFeed))
		}
		for id := range inFeed {
			if applied[id] != "applied" {
				problem("%s: event %s has outcome %q in applied_events, want \"applied\"", fn.name, id, applied[id])
				break
			}
		}
		res.Nodes = append(res.Nodes, nr)
	}
	return nil
}

// queryIDs runs a query returning (event_id, text) rows and returns them as
// a map. A repeated event_id is reported as the value "duplicate".
func queryIDs(ctx context.Context, db *sql.DB, query string) (map[string]string, error) {
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	m := map[string]string{}
	for rows.Next() {
		var id, v string
		if err := rows.Scan(&id, &v); err != nil {
			return nil, err
		}
		if _, dup := m[id]; dup {
			v = "duplicate"
		}
		m[id] = v
	}
	return m, rows.Err()
}

// measure computes the throughput figures and the latency distribution.
func measure(commitAt map[string]time.Time, fleet []*fleetNode, t0 time.Time, res *Result) {
	var lat []time.Duration
	var last time.Time
	for _, fn := range fleet {
		at := fn.timed.appliedAt()
		for id, c := range commitAt {
			a, ok := at[id]
			if !ok {
				continue // reported by verify if it was not applied at all
			}
			lat = append(lat, a.Sub(c))
			if a.After(last) {
				last = a
			}
		}
	}
	if !last.IsZero() {
		res.Apply = last.Sub(t0)
	}
	slices.Sort(lat)
	res.Latency = Latency{N: len(lat)}
	if len(lat) == 0 {
		return
	}
	q := func(p float64) time.Duration {
		i := int(p*float64(len(lat))+0.5) - 1
		return lat[min(max(i, 0), len(lat)-1)]
	}
	res.Latency.P50, res.Latency.P99, res.Latency.P999 = q(0.50), q(0.99), q(0.999)
	res.Latency.Max = lat[len(lat)-1]
}

// report writes the summary and the verdict line to o.Out.
func report(o Options, res *Result) {
	w := o.Out
	rate := func(n int, d time.Duration) string {
		if d <= 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f/s", float64(n)/d.Seconds())
	}
	fmt.Fprintf(w, "\nproducer: %d changes committed in %v (%s); all published to the feed %v after the first commit (%s)\n",
		res.Events, round(res.Commit), rate(res.Events, res.Commit), round(res.Publish), rate(res.Events, res.Publish))
	if res.Apply > 0 {
		fmt.Fprintf(w, "apply:    every node had applied every event %v after the first commit (%s per node, %s over %d nodes)\n",
			round(res.Apply), rate(res.Events, res.Apply), rate(res.Events*len(res.Nodes), res.Apply), len(res.Nodes))
	}
	l := res.Latency
	fmt.Fprintf(w, "latency:  producer commit -> committed on a node, %d samples: p50 %v  p99 %v  p99.9 %v  max %v\n",
		l.N, round(l.P50), round(l.P99), round(l.P999), round(l.Max))
	for _, n := range res.Nodes {
		fmt.Fprintf(w, "%-9s cursor %d, %d events in applied_events, kv digest %s\n", n.Name+":", n.Cursor, n.Applied, short(n.Digest))
	}
	if res.Passed() {
		fmt.Fprintf(w, "PASS: %d nodes identical to the producer (digest %s…), %d events applied once each\n",
			len(res.Nodes), short(res.Digest), res.Events)
		return
	}
	for _, p := range res.Problems {
		fmt.Fprintf(w, "  problem: %s\n", p)
	}
	fmt.Fprintf(w, "FAIL: %d problem(s); the fleet does not match the producer (digest %s…)\n", len(res.Problems), short(res.Digest))
}

func short(digest string) string {
	if _, hex, ok := strings.Cut(digest, ":"); ok {
		digest = hex
	}
	if len(digest) > 12 {
		return digest[:12]
	}
	return digest
}

// round keeps durations readable.
func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}
