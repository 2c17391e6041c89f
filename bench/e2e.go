package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
	"github.com/controlfeed/controlfeed/kv"
	"github.com/controlfeed/controlfeed/outbox"
)

// latencies collects, per event index, the time it was sent and the times
// it reached each node, as nanoseconds since a common origin.
type latencies struct {
	origin time.Time
	sent   []atomic.Int64
	mu     sync.Mutex
	got    []time.Duration // one sample per (event, node)
	done   []atomic.Int64  // per node: events completed
	unsent atomic.Int64    // samples of events applied before marked sent (a harness bug)
}

func newLatencies(n, nodes int) *latencies {
	return &latencies{origin: time.Now(), sent: make([]atomic.Int64, n+1), done: make([]atomic.Int64, nodes)}
}

func (l *latencies) markSent(i int) { l.sent[i].Store(int64(time.Since(l.origin))) }

// markApplied records that node applied event i at at. Event i must have
// been marked sent before it could be applied (else the sample would be
// measured from origin); markSent runs before the producer's commit.
func (l *latencies) markApplied(node, i int, at time.Time) {
	sent := l.sent[i].Load()
	if sent == 0 {
		l.unsent.Add(1)
	}
	d := time.Duration(int64(at.Sub(l.origin)) - sent)
	l.mu.Lock()
	l.got = append(l.got, d)
	l.mu.Unlock()
	l.done[node].Add(1)
}

func (l *latencies) wait(ctx context.Context, n int) error {
	deadline := time.Now().Add(time.Minute)
	for {
		all := true
		for i := range l.done {
			if l.done[i].Load() < int64(n) {
				all = false
			}
		}
		if all {
			if u := l.unsent.Load(); u > 0 {
				return fmt.Errorf("%d samples were applied before their send time was recorded; the latencies would be wrong", u)
			}
			return nil
		}
		if time.Now().After(deadline) {
			var s []string
			for i := range l.done {
				s = append(s, strconv.FormatInt(l.done[i].Load(), 10))
			}
			return fmt.Errorf("nodes applied %s of %d events: %w", strings.Join(s, ", "), n, errNotConverged)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// quantiles returns p50, p99, p99.9 and max in milliseconds.
func (l *latencies) quantiles() [4]float64 {
	l.mu.Lock()
	s := slices.Clone(l.got)
	l.mu.Unlock()
	slices.Sort(s)
	q := func(p float64) float64 {
		if len(s) == 0 {
			return 0
		}
		i := min(int(p*float64(len(s))), len(s)-1)
		return float64(s[i]) / 1e6
	}
	return [4]float64{q(0.50), q(0.99), q(0.999), q(1)}
}

func eventIndex(id string) int {
	i, _ := strconv.Atoi(strings.TrimPrefix(id, "bench-"))
	return i
}

// pace calls f(i) for i = 1..n at rate per second, on schedule (a late call
// is not followed by a burst beyond catching up to the schedule).
func pace(ctx context.Context, n, rate int, f func(i int) error) error {
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i := 1; i <= n; i++ {
		if d := time.Until(start.Add(time.Duration(i-1) * interval)); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		if err := f(i); err != nil {
			return err
		}
	}
	return nil
}

// timedSource records, for each event, the moment the applier acknowledges
// it: the applier acks only after the transaction applying it committed.
// It embeds *natsfeed.Source, so Wait, Head and Close are forwarded.
type timedSource struct {
	*natsfeed.Source
	node int
	lat  *latencies

	mu      sync.Mutex
	pending []string
	seen    map[string]bool
}

var (
	_ feed.CumulativeAcker = (*timedSource)(nil)
	_ feed.Waiter          = (*timedSource)(nil)
)

func (s *timedSource) Poll(ctx context.Context, since uint64) ([]controlevent.Event, error) {
	evs, err := s.Source.Poll(ctx, since)
	s.mu.Lock()
	for _, e := range evs {
		s.pending = append(s.pending, e.EventID)
	}
	s.mu.Unlock()
	return evs, err
}

func (s *timedSource) record(eventID string) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	k := slices.Index(s.pending, eventID)
	if k < 0 {
		return
	}
	for _, id := range s.pending[:k+1] {
		if !s.seen[id] {
			s.seen[id] = true
			s.lat.markApplied(s.node, eventIndex(id), now)
		}
	}
	s.pending = slices.Delete(s.pending, 0, k+1)
}

func (s *timedSource) Ack(ctx context.Context, eventID string) error {
	s.record(eventID)
	return s.Source.Ack(ctx, eventID)
}

func (s *timedSource) AckThrough(ctx context.Context, eventID string) error {
	s.record(eventID)
	return s.Source.AckThrough(ctx, eventID)
}

func runE2E(ctx context.Context, e *env) ([]Result, error) {
	srv, err := startServer(e.dir)
	if err != nil {
		return nil, err
	}
	defer srv.close()
	p, err := newPool(ctx, filepath.Join(e.dir, "artifacts"))
	if err != nil {
		return nil, err
	}
	n := int(float64(e.cfg.E2ERate) * e.cfg.E2EDuration.Seconds())
	nodes := e.cfg.E2ENodes
	ours, err := e2eControlfeed(ctx, e, srv, p, n, nodes)
	if err != nil {
		return nil, err
	}
	raw, err := e2eRaw(ctx, e, srv, p, n, nodes, false)
	if err != nil {
		return nil, err
	}
	rawDurable, err := e2eRaw(ctx, e, srv, p, n, nodes, true)
	if err != nil {
		return nil, err
	}
	note := fmt.Sprintf("%d events at %d/s, %d nodes; producer commit -> node commit vs publish -> consume+commit+ack", n, e.cfg.E2ERate, nodes)
	names := []string{"p50 ms", "p99 ms", "p99.9 ms", "max ms"}
	targets := []float64{2, 10, 0, 0}
	var out []Result
	for i := range names {
		r := Result{Name: "e2e/latency", Metric: names[i], Value: ours[i], Baseline: raw[i], OK: true}
		if raw[i] > 0 {
			r.Ratio = ours[i] / raw[i]
		}
		if targets[i] > 0 {
			r.Target = fmt.Sprintf("<= %g ms", targets[i])
			r.OK = ours[i] <= targets[i]
		}
		if i == 0 {
			r.Note = note
		}
		out = append(out, r)
	}
	// A second baseline, not the target's: the raw path preceded by the
	// producer's durable write that controlfeed's path includes (commit the
	// row, fsync the WAL, then publish). It shows what remains once that
	// inherent cost is counted on both sides.
	for i := range names {
		r := Result{Name: "e2e/latency-vs-durable-raw", Metric: names[i], Value: ours[i], Baseline: rawDurable[i], OK: true}
		if rawDurable[i] > 0 {
			r.Ratio = ours[i] / rawDurable[i]
		}
		if i == 0 {
			r.Note = "not the target's baseline: raw preceded by the producer's durable write (SQLite commit + WAL fsync, then publish)"
		}
		out = append(out, r)
	}
	return out, nil
}

// e2eControlfeed runs a producer (kv row + outbox in one transaction, then
// Notify), a pump and nodes appliers, and measures commit -> applied.
func e2eControlfeed(ctx context.Context, e *env, srv *server, p *pool, n, nodes int) ([4]float64, error) {
	var zero [4]float64
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lat := newLatencies(n, nodes)
	prod, err := openDB(ctx, filepath.Join(e.dir, "producer.db"))
	if err != nil {
		return zero, err
	}
	defer prod.Close()
	sink, err := natsfeed.NewSink(ctx, srv.feedConfig("E2E", ""), nil)
	if err != nil {
		return zero, err
	}
	defer sink.Close()
	pump, err := outbox.NewPump(prod, sink, nil)
	if err != nil {
		return zero, err
	}
	var wg sync.WaitGroup
	errs := make(chan error, nodes+1)
	wg.Add(1)
	go func() { defer wg.Done(); errs <- pump.Run(ctx) }()
	for k := range nodes {
		db, err := openDB(ctx, filepath.Join(e.dir, fmt.Sprintf("node-%d.db", k)))
		if err != nil {
			return zero, err
		}
		defer db.Close()
		inner, err := natsfeed.NewSource(ctx, srv.feedConfig("E2E", fmt.Sprintf("node-%d", k)), nil)
		if err != nil {
			return zero, err
		}
		defer inner.Close()
		src := &timedSource{Source: inner, node: k, lat: lat, seen: map[string]bool{}}
		a, err := applier.New(db, src, p.store, &applier.Config{Handlers: kv.Handlers()})
		if err != nil {
			return zero, err
		}
		wg.Add(1)
		go func() { defer wg.Done(); errs <- a.Run(ctx) }()
	}
	at := time.Now().UTC()
	err = pace(ctx, n, e.cfg.E2ERate, func(i int) error {
		ev := p.event(i, at)
		tx, err := prod.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if err := rawPut(ctx, tx, ev.Key, p.payloads[i%poolSize], at.Format(time.RFC3339Nano)); err != nil {
			return err
		}
		if err := outbox.Append(ctx, tx, ev); err != nil {
			return err
		}
		// Marked before Commit: once committed, the pump (woken by an
		// earlier Notify or its ticker) may publish the row and a node
		// apply it before this goroutine runs again; a send time stored
		// after that would be read as unset (0) and count the whole run
		// as latency. The commit's own duration is counted instead.
		lat.markSent(i)
		if err := tx.Commit(); err != nil {
			return err
		}
		pump.Notify()
		return nil
	})
	if err == nil {
		err = lat.wait(ctx, n)
	}
	cancel()
	wg.Wait()
	close(errs)
	for e := range errs {
		err = errors.Join(err, e)
	}
	if err != nil {
		return zero, fmt.Errorf("controlfeed pipeline: %w", err)
	}
	return lat.quantiles(), nil
}

// e2eRaw publishes synchronously at the same rate and has each raw node
// consume with a pull consumer, commit one row per message and ack it.
// With durable, each publish is preceded by the producer's durable write
// that controlfeed's path pays before the pump may publish: a commit of the
// row in a producer SQLite database (WAL, synchronous=NORMAL, as producers
// run) and an fsync of its WAL file, what the pump's durability step does.
func e2eRaw(ctx context.Context, e *env, srv *server, p *pool, n, nodes int, durable bool) ([4]float64, error) {
	var zero [4]float64
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lat := newLatencies(n, nodes)
	stream, prefix := "E2ERAW", "raw"
	var prod *sql.DB
	var prodPath string
	if durable {
		stream, prefix = "E2ERAWD", "rawd"
		prodPath = filepath.Join(e.dir, "rawd-producer.db")
		var err error
		if prod, err = sqlitedb.Open(ctx, prodPath); err != nil {
			return zero, err
		}
		defer prod.Close()
		if err := kv.Migrate(ctx, prod); err != nil {
			return zero, err
		}
	}
	nc, js, err := srv.rawJS(ctx, stream)
	if err != nil {
		return zero, err
	}
	defer nc.Close()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return zero, err
	}
	var consErr atomic.Value
	for k := range nodes {
		db, err := sqlitedb.Open(ctx, filepath.Join(e.dir, fmt.Sprintf("%s-%d.db", prefix, k)))
		if err != nil {
			return zero, err
		}
		defer db.Close()
		// A raw consumer has no background checkpointer: give its one
		// connection SQLite's default automatic checkpoint (1000 pages)
		// rather than sqlitedb's backstop, which is sized for processes
		// that checkpoint in the background and would make the raw side
		// copy a 40 MiB WAL inside one commit.
		db.SetMaxOpenConns(1)
		if _, err := db.ExecContext(ctx, `PRAGMA wal_autocheckpoint = 1000`); err != nil {
			return zero, err
		}
		if err := kv.Migrate(ctx, db); err != nil {
			return zero, err
		}
		cons, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: fmt.Sprintf("%s-%d", prefix, k), AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			return zero, err
		}
		at := time.Now().UTC().Format(time.RFC3339Nano)
		cc, err := cons.Consume(func(m jetstream.Msg) {
			i := eventIndex(m.Headers().Get(jetstream.MsgIDHeader))
			if err := commitOne(ctx, db, fmt.Sprintf("key/%09d", i), m.Data(), at); err != nil {
				consErr.CompareAndSwap(nil, err)
				return
			}
			lat.markApplied(k, i, time.Now())
			_ = m.Ack()
		})
		if err != nil {
			return zero, err
		}
		defer cc.Stop()
	}
	subj := "bench." + stream
	now := time.Now().UTC()
	at := now.Format(time.RFC3339Nano)
	err = pace(ctx, n, e.cfg.E2ERate, func(i int) error {
		ev := p.event(i, now)
		body, err := controlevent.Marshal(ev)
		if err != nil {
			return err
		}
		lat.markSent(i)
		if durable {
			if err := commitOne(ctx, prod, ev.Key, p.payloads[i%poolSize], at); err != nil {
				return err
			}
			if err := fsyncFile(prodPath + "-wal"); err != nil {
				return err
			}
		}
		_, err = js.Publish(ctx, subj, body, jetstream.WithMsgID(ev.EventID))
		return err
	})
	if err == nil {
		err = lat.wait(ctx, n)
	}
	if v := consErr.Load(); v != nil {
		err = errors.Join(err, v.(error))
	}
	if err != nil {
		return zero, fmt.Errorf("raw pipeline (durable producer write: %v): %w", durable, err)
	}
	return lat.quantiles(), nil
}

// fsyncFile fsyncs the file at path.
func fsyncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	serr := f.Sync()
	if cerr := f.Close(); serr == nil {
		serr = cerr
	}
	if serr != nil {
		return fmt.Errorf("fsync %s: %w", path, serr)
	}
	return nil
}

func commitOne(ctx context.Context, db *sql.DB, key string, value []byte, at string) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := rawPut(ctx, tx, key, value, at); err != nil {
		return err
	}
	return tx.Commit()
}

// runFanout measures the end-to-end latency of the e2e measurement with
// E2ENodes nodes and with FanoutNodes nodes (each an applier on its own
// SQLite file and its own durable consumer), each on a fresh embedded
// server, in the same run: what one server and this machine's cores bound.
func runFanout(ctx context.Context, e *env) ([]Result, error) {
	n := int(float64(e.cfg.E2ERate) * e.cfg.E2EDuration.Seconds())
	measure := func(nodes int) ([4]float64, error) {
		dir := filepath.Join(e.dir, fmt.Sprintf("nodes-%d", nodes))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return [4]float64{}, err
		}
		srv, err := startServer(dir)
		if err != nil {
			return [4]float64{}, err
		}
		defer srv.close()
		p, err := newPool(ctx, filepath.Join(dir, "artifacts"))
		if err != nil {
			return [4]float64{}, err
		}
		return e2eControlfeed(ctx, &env{cfg: e.cfg, dir: dir, log: e.log}, srv, p, n, nodes)
	}
	few, err := measure(e.cfg.E2ENodes)
	if err != nil {
		return nil, err
	}
	many, err := measure(e.cfg.FanoutNodes)
	if err != nil {
		return nil, err
	}
	var out []Result
	for i, name := range []string{"p50 ms", "p99 ms", "p99.9 ms", "max ms"} {
		r := Result{Name: "fanout/latency", Metric: name, Value: many[i], Baseline: few[i], OK: true}
		if few[i] > 0 {
			r.Ratio = many[i] / few[i]
		}
		if i == 0 {
			r.Note = fmt.Sprintf("%d events at %d/s; %d nodes vs %d nodes (baseline), each run on its own embedded server", n, e.cfg.E2ERate, e.cfg.FanoutNodes, e.cfg.E2ENodes)
		}
		out = append(out, r)
	}
	return out, nil
}
