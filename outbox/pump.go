package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/internal/backoff"
	"github.com/controlfeed/controlfeed/internal/failpoint"
	"github.com/controlfeed/controlfeed/trust"
)

// ErrSinkContract is wrapped by publish errors when the Sink's answer breaks
// the feed.Sink contract: a ControlVersion of 0 or beyond what SQL can store,
// another EventID than the one sent, a ControlVersion not greater than the
// previous row's in the same pass, or a BatchAppender result that does not
// match its input. The row stays pending and is retried like any failure.
var ErrSinkContract = errors.New("sink broke its contract")

// errStopped ends a pass early because the caller's context is done. It is
// not a failure.
var errStopped = errors.New("outbox: pass stopped")

// maxLastError bounds the text stored in last_error.
const maxLastError = 2048

// Stats reports what a Pump has done since it was created. Values are a
// snapshot; Stats is safe to call from any goroutine.
type Stats struct {
	// Published counts rows published and recorded.
	Published uint64
	// Failures counts failed publish attempts and failed passes.
	Failures uint64
	// Dead counts rows this pump marked dead.
	Dead uint64
	// LastError is the latest failure's message; empty if none.
	LastError string
	// LastErrorAt is when LastError happened.
	LastErrorAt time.Time
	// Retrying is true from a failed pass in Run until a pass succeeds.
	Retrying bool
	// NextRetry is when Run retries next; zero unless Retrying.
	NextRetry time.Time
	// Waiting says what the pump is blocked on right now (a publish to the
	// Sink, naming the first event), and WaitingSince since when; empty and
	// zero while it waits on nothing. A Waiting older than a threshold is a
	// stuck pump even though nothing failed yet.
	Waiting      string
	WaitingSince time.Time
	// LastPublishAt is when the Sink last accepted an event; zero if never.
	LastPublishAt time.Time
	// Standby is true while Run waits for the outbox's drainer lock
	// (PostgreSQL), held by another pump; it publishes nothing meanwhile.
	Standby bool
	// Takeovers counts the times Run took the drainer lock.
	Takeovers uint64
}

// Pump drains the outbox into a feed.Sink in outbox order. Create it with
// NewPump and drive it with Run (long-running) or Pass (one drain). Its
// methods are safe for concurrent use; passes never overlap.
type Pump struct {
	db      *sql.DB
	sink    feed.Sink
	batch   feed.BatchAppender // nil when the Sink has no batch capability
	dia     *dialect
	recov   feed.Recoverer // nil when the Sink cannot tell recoveries
	cfg     Config
	log     *slog.Logger
	notify  chan struct{}
	durable durability
	// publishDur is MetricPublishDuration, nil without Config.Registerer.
	publishDur prometheus.Histogram

	passMu  sync.Mutex // serialises passes: one publisher at a time
	running atomic.Bool

	mu    sync.Mutex
	stats Stats
}

// NewPump returns a pump publishing the outbox in db to sink. It refuses a
// nil db or sink, a sink whose Name() is "nop" (the nop sink assigns no
// ControlVersion, so nothing could ever be recorded as published), and an
// invalid cfg. cfg may be nil for the defaults. If sink implements
// feed.BatchAppender the pump publishes windows of up to Config.BatchSize
// rows with it; otherwise it calls Append once per row. If sink implements
// feed.Recoverer, Run retries a failed pass as soon as the sink reports
// that its broker came back (see Run).
func NewPump(db *sql.DB, sink feed.Sink, cfg *Config) (*Pump, error) {
	if db == nil {
		return nil, errors.New("outbox: new pump: nil *sql.DB")
	}
	if sink == nil {
		return nil, errors.New("outbox: new pump: nil feed.Sink")
	}
	if sink.Name() == "nop" {
		return nil, errors.New(`outbox: new pump: sink "nop" discards events and assigns no ControlVersion; configure a real sink (file, jetstream) or do not run a pump`)
	}
	var c Config
	if cfg != nil {
		if err := cfg.Validate(); err != nil {
			return nil, fmt.Errorf("outbox: new pump: %w", err)
		}
		c = *cfg
	}
	c.setDefaults()
	p := &Pump{
		db:     db,
		dia:    dialectOf(db),
		sink:   sink,
		cfg:    c,
		log:    c.Logger.With("component", "outbox.pump", "sink", sink.Name()),
		notify: make(chan struct{}, 1),
	}
	p.batch, _ = sink.(feed.BatchAppender)
	p.recov, _ = sink.(feed.Recoverer)
	var err error
	if p.publishDur, err = newPublishHistogram(c.Registerer); err != nil {
		return nil, err
	}
	return p, nil
}

// Notify wakes a running pump to publish now, typically right after the
// caller committed a transaction that called Append. It never blocks, is
// safe from any goroutine, and coalesces: many calls before the pump wakes
// cause one pass. Without Notify the pump still finds the row within
// Config.PollInterval.
func (p *Pump) Notify() {
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// Stats returns a snapshot of the pump's counters and retry state.
func (p *Pump) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// Pass drains the outbox once, now: it publishes pending rows in order until
// none is left, one fails, or ctx is done, and returns how many rows it
// published and recorded. It does not retry; a failure is returned (and
// recorded on the row and in Stats). Canceling ctx aborts the publish and
// write-back in flight: rows the Sink accepted but whose write-back did not
// commit stay pending and are republished, with the same EventID, by a later
// pass. Pass waits for a pass run by Run to finish, and vice versa. Pass
// does not take the drainer lock (PostgreSQL): it publishes even while
// another process's pump holds it.
func (p *Pump) Pass(ctx context.Context) (int, error) {
	n, err := p.pass(ctx, ctx)
	if errors.Is(err, errStopped) {
		return n, fmt.Errorf("outbox: pass: %w", ctx.Err())
	}
	if err != nil && ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		// A canceled ctx makes database/sql roll back a transaction in
		// flight; its Commit then reports only sql.ErrTxDone. Say why.
		return n, fmt.Errorf("outbox: pass: %w (%w)", ctx.Err(), err)
	}
	return n, err
}

// Run drains the outbox until ctx is done: one pass at start, then one after
// each Notify or every Config.PollInterval, whichever comes first. On
// PostgreSQL Run also LISTENs for the notification that the outbox's insert
// trigger sends when an appending transaction commits, in any process, and
// treats it as a Notify (unless Config.NoListen); the poll interval still
// bounds the delay when a notification is lost. A failed
// pass is retried after a capped exponential backoff with jitter
// (Config.MinBackoff to Config.MaxBackoff), during which Stats reports
// Retrying; later rows never overtake the failed one. When the Sink
// implements feed.Recoverer and reports a recovery (its connection came
// back, the stream has a leader again) during the failed pass or the
// backoff, Run retries at once and starts the backoff over, so publishing
// resumes as soon as the broker can take it, not when a delay grown during
// the outage runs out.
//
// When ctx is done Run starts no new publish, lets the one in flight and its
// write-back finish under a context that is not canceled, bounded by
// Config.ShutdownTimeout, and returns nil. If that bound expires, the publish
// is canceled, its row stays pending (to be republished with the same
// EventID), and Run returns an error. Run returns an error at once if the
// pump is already running.
//
// On PostgreSQL, Run first takes the outbox's drainer lock, so that of all
// the pumps on one outbox (in any number of processes) exactly one
// publishes; the others stand by (Stats.Standby) and one of them takes over
// when the holder stops, dies or loses its lock session. See "One drainer
// on PostgreSQL" in the package doc; Config.NoDrainerLock turns it off.
// There Run keeps up to two of the pool's connections for its whole life
// (the drainer lock's session and the LISTEN session) besides those its
// passes use, so a pool limited with SetMaxOpenConns needs at least 3.
func (p *Pump) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return errors.New("outbox: run: the pump is already running")
	}
	defer p.running.Store(false)
	p.log.Info("outbox pump started", "poll_interval", p.cfg.PollInterval, "batch_size", p.cfg.BatchSize, "batch_appender", p.batch != nil)
	defer p.log.Info("outbox pump stopped")
	if p.dia.drainerLock != "" && !p.cfg.NoDrainerLock {
		return p.runExclusive(ctx)
	}
	return p.drain(ctx)
}

// drain is Run's loop of passes, until ctx is done.
func (p *Pump) drain(ctx context.Context) error {
	ticker := time.NewTicker(p.cfg.PollInterval)
	defer ticker.Stop()
	var kick chan struct{}
	if p.cfg.CheckpointInterval > 0 && p.dia.checkpoint != "" {
		kick = make(chan struct{}, 1)
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			p.checkpointLoop(cctx, kick)
		}()
		defer func() { cancel(); <-done }()
	}
	if p.dia.listen && !p.cfg.NoListen {
		lctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			p.listenLoop(lctx)
		}()
		defer func() { cancel(); <-done }()
	}
	failures := 0 // consecutive failed passes
	level := 0    // backoff step: failures since the last recovery
	for {
		if ctx.Err() != nil {
			return nil
		}
		var recovered <-chan struct{}
		if p.recov != nil {
			recovered = p.recov.Recovered() // before the pass: a recovery during it counts
		}
		n, err, timedOut := p.runPass(ctx)
		if n > 0 && kick != nil {
			select {
			case kick <- struct{}{}:
			default:
			}
		}
		if timedOut {
			return fmt.Errorf("outbox: run: a publish was still in flight %v after stop (ShutdownTimeout); it was canceled and its row stays pending", p.cfg.ShutdownTimeout)
		}
		if err == nil && failures > 0 {
			p.log.Info("outbox pass succeeded after failures", "consecutive_failures", failures)
			failures, level = 0, 0
			p.setRetry(false, time.Time{})
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			failures++
			level++
			d := p.backoff(level)
			p.setRetry(true, time.Now().Add(d))
			p.log.Warn("outbox pass failed; retrying", "err", err, "consecutive_failures", failures, "retry_in", d)
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			case <-recovered:
				t.Stop()
				p.log.Info("outbox: the sink's broker recovered; retrying now, backoff starts over", "consecutive_failures", failures)
				level = 0
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-p.notify:
		case <-ticker.C:
		}
	}
}

// runPass runs one pass that stops starting publishes when ctx is done but
// lets the step in flight finish, for at most ShutdownTimeout.
func (p *Pump) runPass(ctx context.Context) (n int, err error, timedOut bool) {
	work, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	done := make(chan struct{})
	var expired atomic.Bool
	go func() {
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		t := time.NewTimer(p.cfg.ShutdownTimeout)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			expired.Store(true)
			cancel()
		}
	}()
	n, err = p.pass(ctx, work)
	close(done)
	if errors.Is(err, errStopped) {
		err = nil
	}
	return n, err, expired.Load()
}

// backoff returns the delay before retry number n (1-based): MinBackoff
// doubled n-1 times, capped at MaxBackoff, then jittered to [d/2, d].
func (p *Pump) backoff(n int) time.Duration {
	return backoff.Delay(n, p.cfg.MinBackoff, p.cfg.MaxBackoff)
}

func (p *Pump) setRetry(retrying bool, next time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats.Retrying = retrying
	p.stats.NextRetry = next
}

func (p *Pump) recordFailure(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats.Failures++
	p.stats.LastError = err.Error()
	p.stats.LastErrorAt = time.Now()
}

// pendingRow is a pending outbox row as the pump reads it.
type pendingRow struct {
	id      int64
	eventID string
	payload string
}

// chunk is one read of pending rows, decoded: the rows to publish with their
// events, in outbox order, and the rows that can never be published.
type chunk struct {
	live   []pendingRow
	events []controlevent.Event
	dead   []deadRow
	// last is the id of the read's last row; full is true when the read
	// returned BatchSize rows, so more may follow.
	last int64
	full bool
}

func (c *chunk) empty() bool { return len(c.live) == 0 && len(c.dead) == 0 }

// pass publishes pending rows in chunks of BatchSize until none is left or
// one fails. It starts no new publish once stop is done (returning
// errStopped); all I/O uses work.
//
// The pass's goroutine only publishes. Once a read returned a full chunk, a
// second goroutine (dbWorker) does the pass's database work while chunk k+1
// is published: first the write-back of chunk k, then the read and decode of
// chunk k+2 (ids after chunk k+1's last, so it never sees rows of a chunk
// still being published or recorded). The publish loop then does no SQL and
// no decoding between two round trips. One worker, not a reader and a writer:
// the database work then takes one CPU at most, beside the round trips
// (measured a little faster on 2 vCPUs). Everything stays in outbox order:
//   - chunks are published one at a time, in order;
//   - chunk k+1 is recorded only after chunk k's write-back committed. If
//     that write-back fails, the pass stops there and chunk k+1 stays
//     pending although it was published; the next pass republishes both
//     with the same EventIDs, which the Sink's dedup resolves to the same
//     ControlVersions. No chunk after k+1 is published.
//
// Reading by "id after" relies on ids being assigned in commit order, which
// holds for SQLite's single writer and for PostgreSQL's insert trigger (see
// "Order on PostgreSQL" in the package doc). The worker is stopped and waited for
// before pass returns; a pass whose first read is not full starts none.
func (p *Pump) pass(stop, work context.Context) (int, error) {
	p.passMu.Lock()
	defer p.passMu.Unlock()
	if stop.Err() != nil {
		return 0, errStopped
	}
	var (
		total  int
		prevCV uint64
		w      *dbWorker
		// owesRecord: the job last sent to the worker had a write-back
		// whose answer the pass has not taken yet.
		owesRecord bool
		// held is a published chunk, past its failure point, that is not
		// handed to the worker yet.
		held *chunkResult
	)
	defer func() {
		if w != nil {
			w.stop()
		}
	}()
	waitRecord := func() error {
		if !owesRecord {
			return nil
		}
		owesRecord = false
		r := <-w.recorded
		total += r.n
		return r.err
	}
	// finish records held (synchronously) after the worker's write-back.
	finish := func(err error) (int, error) {
		if werr := waitRecord(); werr != nil {
			return total, werr
		}
		if held != nil {
			n, rerr := p.record(work, *held)
			total += n
			if rerr != nil {
				return total, rerr
			}
		}
		return total, err
	}

	var head trust.Head // the signing chain's head, with Config.Signer
	if p.cfg.Signer != nil {
		h, err := p.readChainHead(work)
		if err != nil {
			p.recordFailure(err)
			return 0, err
		}
		head = h
	}
	c, err := p.readChunk(work, 0)
	for {
		if err != nil {
			p.recordFailure(err)
			return finish(err)
		}
		if c.empty() {
			return finish(nil)
		}
		if c.full || held != nil {
			if w == nil {
				w = p.startWorker(work)
			}
			job := dbJob{record: held, readAfter: -1}
			if c.full {
				job.readAfter = c.last
			}
			w.jobs <- job
			owesRecord, held = held != nil, nil
		}
		r := p.publishChunk(stop, work, c, &prevCV, &head)
		if err := waitRecord(); err != nil {
			// Chunk r was published, not recorded: it stays pending.
			return total, err
		}
		if err := r.beforeRecord(); err != nil {
			p.recordFailure(err)
			return total, err
		}
		if r.pubErr != nil || !c.full {
			n, err := p.record(work, r)
			return total + n, err
		}
		held = &r
		if stop.Err() != nil {
			return finish(errStopped)
		}
		nr := <-w.read // a full chunk's job asked for the next read
		c, err = nr.c, nr.err
	}
}

// dbJob is one turn of the pass's database worker: record a published chunk
// (if record is set), then read the chunk after readAfter (if >= 0).
type dbJob struct {
	record    *chunkResult
	readAfter int64
}

type recordResult struct {
	n   int
	err error
}

type readResult struct {
	c   chunk
	err error
}

// dbWorker runs a pass's write-backs and reads on one goroutine, one job at
// a time, in the order sent. Each answer channel holds one answer, so the
// worker never blocks on an answer the pass no longer wants.
type dbWorker struct {
	jobs     chan dbJob
	recorded chan recordResult
	read     chan readResult
	done     chan struct{}
}

func (p *Pump) startWorker(work context.Context) *dbWorker {
	w := &dbWorker{
		jobs:     make(chan dbJob),
		recorded: make(chan recordResult, 1),
		read:     make(chan readResult, 1),
		done:     make(chan struct{}),
	}
	go func() {
		defer close(w.done)
		for j := range w.jobs {
			if j.record != nil {
				n, err := p.record(work, *j.record)
				w.recorded <- recordResult{n, err}
			}
			if j.readAfter >= 0 {
				c, err := p.readChunk(work, j.readAfter)
				w.read <- readResult{c, err}
			}
		}
	}()
	return w
}

// stop waits for the job in progress, if any, and ends the worker.
func (w *dbWorker) stop() {
	close(w.jobs)
	<-w.done
}

// readChunk reads up to BatchSize pending rows after id after, makes them
// durable (see durability) and decodes them.
func (p *Pump) readChunk(ctx context.Context, after int64) (chunk, error) {
	rows, err := p.loadPending(ctx, after)
	if err != nil {
		return chunk{}, err
	}
	if len(rows) > 0 {
		if err := p.durable.sync(ctx, p.db, p.dia); err != nil {
			return chunk{}, err
		}
	}
	c := chunk{
		live:   make([]pendingRow, 0, len(rows)),
		events: make([]controlevent.Event, 0, len(rows)),
		full:   len(rows) >= p.cfg.BatchSize,
	}
	if len(rows) > 0 {
		c.last = rows[len(rows)-1].id
	}
	for _, r := range rows {
		e, err := decodePayload(r.eventID, []byte(r.payload))
		if err != nil {
			c.dead = append(c.dead, deadRow{r, err.Error()})
			continue
		}
		r.payload = "" // decoded; not kept
		c.live = append(c.live, r)
		c.events = append(c.events, e)
	}
	return c, nil
}

func (p *Pump) loadPending(ctx context.Context, after int64) ([]pendingRow, error) {
	rows, err := p.db.QueryContext(ctx, p.dia.selectPending, after, p.cfg.BatchSize)
	if err != nil {
		return nil, fmt.Errorf("outbox: pass: read pending rows: %w", err)
	}
	defer rows.Close()
	out := make([]pendingRow, 0, p.cfg.BatchSize)
	for rows.Next() {
		var r pendingRow
		if err := rows.Scan(&r.id, &r.eventID, &r.payload); err != nil {
			return nil, fmt.Errorf("outbox: pass: read pending rows: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox: pass: read pending rows: %w", err)
	}
	return out, nil
}

type deadRow struct {
	row    pendingRow
	reason string
}

// chunkResult is one chunk after publishing: what to record.
type chunkResult struct {
	live    []pendingRow
	stamped []controlevent.Event
	pubErr  error
	dead    []deadRow
	head    *trust.Head // the trust chain head after stamped (with Config.Signer)
}

// publishChunk publishes a chunk's decodable rows in order.
func (p *Pump) publishChunk(stop, work context.Context, c chunk, prevCV *uint64, head *trust.Head) chunkResult {
	r := chunkResult{live: c.live, dead: c.dead}
	events := c.events
	var heads []trust.Head
	if p.cfg.Signer != nil {
		events, heads, r.pubErr = p.sign(c, &r, *head)
		r.live = c.live[:len(events)]
	}
	var err error
	r.stamped, err = p.publish(stop, work, r.live, events, prevCV)
	if err != nil {
		r.pubErr = err
	}
	if k := len(r.stamped); k > 0 && heads != nil {
		*head = heads[k-1]
		r.head = &heads[k-1]
	}
	return r
}

// sign signs c's events in order after head. A row whose event cannot take
// the signature member is added to r's dead rows, and the chunk ends before
// it with an error that stops the pass after the write-back (the next pass
// continues after the dead row).
func (p *Pump) sign(c chunk, r *chunkResult, head trust.Head) ([]controlevent.Event, []trust.Head, error) {
	events, heads, err := trust.SignBatch(p.cfg.Signer, c.events, head)
	if err != nil {
		row := c.live[len(events)]
		r.dead = append(r.dead, deadRow{row: row, reason: "cannot be signed: " + err.Error()})
		return events, heads, fmt.Errorf("outbox: sign %q (outbox id %d): %w", row.eventID, row.id, err)
	}
	return events, heads, nil
}

// readChainHead returns the trust chain head recorded by the last
// write-back of signed events (the zero Head before the first).
func (p *Pump) readChainHead(ctx context.Context) (trust.Head, error) {
	var h trust.Head
	var seq int64
	err := p.db.QueryRowContext(ctx, p.dia.selectChain).Scan(&seq, &h.Digest)
	if errors.Is(err, sql.ErrNoRows) {
		return trust.Head{}, nil
	}
	if err != nil {
		return h, fmt.Errorf("outbox: read the signing chain head: %w", err)
	}
	h.Seq = uint64(seq)
	return h, nil
}

// beforeRecord is the failure point between publish and write-back; it runs
// on the pass's goroutine, whether or not the write-back then runs in the
// background.
func (c chunkResult) beforeRecord() error {
	if len(c.stamped) == 0 {
		return nil
	}
	if err := failpoint.Inject(failpoint.OutboxAfterPublishBeforeWriteback); err != nil {
		return fmt.Errorf("outbox: write back %d published rows: %w", len(c.stamped), err)
	}
	return nil
}

// record writes back one chunk's outcome in one transaction: the published
// prefix, the failed row's bookkeeping, and the rows found dead. It returns
// how many rows it recorded as published and the publish error, if any.
func (p *Pump) record(work context.Context, c chunkResult) (int, error) {
	var failed *pendingRow
	if c.pubErr != nil && !errors.Is(c.pubErr, errStopped) && len(c.stamped) < len(c.live) {
		failed = &c.live[len(c.stamped)]
	}
	if err := p.writeBack(work, c.live[:len(c.stamped)], c.stamped, failed, c.pubErr, c.dead, c.head); err != nil {
		p.recordFailure(err)
		if c.pubErr != nil && !errors.Is(c.pubErr, errStopped) {
			p.recordFailure(c.pubErr)
			return 0, errors.Join(c.pubErr, err)
		}
		return 0, err
	}
	for _, d := range c.dead {
		p.log.Error("outbox row can never be published; marked dead", "outbox_id", d.row.id, "event_id", d.row.eventID, "reason", d.reason)
	}
	p.mu.Lock()
	p.stats.Published += uint64(len(c.stamped))
	p.stats.Dead += uint64(len(c.dead))
	p.mu.Unlock()
	if c.pubErr != nil && !errors.Is(c.pubErr, errStopped) {
		p.recordFailure(c.pubErr)
	}
	return len(c.stamped), c.pubErr
}

// publish hands events to the Sink in order and returns the stamped prefix
// that was published and checked, and the error that stopped it.
func (p *Pump) publish(stop, work context.Context, rows []pendingRow, events []controlevent.Event, prevCV *uint64) ([]controlevent.Event, error) {
	if len(events) == 0 {
		return nil, nil
	}
	out := make([]controlevent.Event, 0, len(events))
	if p.batch != nil {
		if stop.Err() != nil {
			return nil, errStopped
		}
		if err := failpoint.Inject(failpoint.OutboxBeforePublish); err != nil {
			return out, fmt.Errorf("outbox: publish %q (outbox id %d) to %s: %w", rows[0].eventID, rows[0].id, p.sink.Name(), err)
		}
		var got []controlevent.Event
		err := p.callSink(work, rows[0], len(events), func(ctx context.Context) (err error) {
			got, err = p.batch.AppendBatch(ctx, events)
			return err
		})
		for i := range min(len(got), len(events)) {
			if cerr := p.checkStamp(rows[i], got[i], *prevCV); cerr != nil {
				return out, cerr
			}
			*prevCV = got[i].ControlVersion
			out = append(out, got[i])
		}
		switch {
		case len(got) > len(events):
			return out, fmt.Errorf("outbox: publish batch of %d events to %s: AppendBatch returned %d events: %w", len(events), p.sink.Name(), len(got), ErrSinkContract)
		case err != nil && len(out) == len(events):
			// Every event came back stamped (and checked) and an error
			// too: the contract says the error stops the prefix, so this
			// is a Sink bug. The stamped rows are published; record them
			// and report the breach.
			return out, fmt.Errorf("outbox: publish batch of %d events to %s: AppendBatch returned every event and an error (%w): %w", len(events), p.sink.Name(), err, ErrSinkContract)
		case err != nil:
			r := rows[len(out)]
			return out, fmt.Errorf("outbox: publish %q (outbox id %d) to %s: %w", r.eventID, r.id, p.sink.Name(), err)
		case len(out) < len(events):
			r := rows[len(out)]
			return out, fmt.Errorf("outbox: publish %q (outbox id %d) to %s: AppendBatch returned %d of %d events and no error: %w", r.eventID, r.id, p.sink.Name(), len(got), len(events), ErrSinkContract)
		}
		return out, nil
	}
	for i, e := range events {
		if stop.Err() != nil {
			return out, errStopped
		}
		if err := failpoint.Inject(failpoint.OutboxBeforePublish); err != nil {
			return out, fmt.Errorf("outbox: publish %q (outbox id %d) to %s: %w", rows[i].eventID, rows[i].id, p.sink.Name(), err)
		}
		var got controlevent.Event
		err := p.callSink(work, rows[i], 1, func(ctx context.Context) (err error) {
			got, err = p.sink.Append(ctx, e)
			return err
		})
		if err != nil {
			return out, fmt.Errorf("outbox: publish %q (outbox id %d) to %s: %w", rows[i].eventID, rows[i].id, p.sink.Name(), err)
		}
		if cerr := p.checkStamp(rows[i], got, *prevCV); cerr != nil {
			return out, cerr
		}
		*prevCV = got.ControlVersion
		out = append(out, got)
	}
	return out, nil
}

// callSink runs one call to the Sink (an Append or an AppendBatch of n
// events starting at row first) under Config.PublishTimeout, shown in
// Stats.Waiting while it runs. A call that outlives the timeout gets its
// context canceled; its error then says so. A Sink that ignores its context
// still blocks, but Stats shows what it waits on and since when.
func (p *Pump) callSink(work context.Context, first pendingRow, n int, call func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(work, p.cfg.PublishTimeout)
	defer cancel()
	what := fmt.Sprintf("publish of %q (outbox id %d) to %s", first.eventID, first.id, p.sink.Name())
	if n > 1 {
		what = fmt.Sprintf("publish of %d events from %q (outbox id %d) to %s", n, first.eventID, first.id, p.sink.Name())
	}
	now := time.Now()
	p.mu.Lock()
	p.stats.Waiting, p.stats.WaitingSince = what, now
	p.mu.Unlock()
	err := call(ctx)
	p.observePublish(now)
	p.mu.Lock()
	p.stats.Waiting, p.stats.WaitingSince = "", time.Time{}
	if err == nil {
		p.stats.LastPublishAt = time.Now()
	}
	p.mu.Unlock()
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) && work.Err() == nil {
		err = fmt.Errorf("no answer within %v (Config.PublishTimeout; the sink is stuck or overloaded): %w", p.cfg.PublishTimeout, err)
	}
	return err
}

// checkStamp verifies the Sink's answer for row r against the feed.Sink
// contract and the order of the pass.
func (p *Pump) checkStamp(r pendingRow, got controlevent.Event, prevCV uint64) error {
	var why string
	switch cv := got.ControlVersion; {
	case got.EventID != r.eventID:
		why = fmt.Sprintf("the stamped event has event_id %q", truncate(got.EventID))
	case cv == 0:
		why = "returned ControlVersion 0 (nothing was published)"
	case cv > math.MaxInt64:
		why = fmt.Sprintf("returned ControlVersion %d, beyond what the outbox can store", cv)
	case cv <= prevCV:
		why = fmt.Sprintf("returned ControlVersion %d, not greater than the previous row's %d: the feed's order does not match the outbox order", cv, prevCV)
		p.log.Error("sink ControlVersion went backwards; stopping the pass", "outbox_id", r.id, "event_id", r.eventID, "control_version", cv, "previous_control_version", prevCV)
	default:
		return nil
	}
	return fmt.Errorf("outbox: publish %q (outbox id %d) to %s: %s: %w", r.eventID, r.id, p.sink.Name(), why, ErrSinkContract)
}

// writeBack records a chunk's outcome in one transaction.
func (p *Pump) writeBack(ctx context.Context, published []pendingRow, stamped []controlevent.Event, failed *pendingRow, pubErr error, dead []deadRow, head *trust.Head) error {
	if len(published) == 0 && failed == nil && len(dead) == 0 {
		return nil
	}
	tx, err := p.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("outbox: write back %d published rows: begin: %w", len(published), err)
	}
	defer tx.Rollback()
	now := p.dia.timeValue(time.Now())
	switch {
	case len(published) == 1:
		r := published[0]
		if _, err := tx.ExecContext(ctx, p.dia.markPublished, int64(stamped[0].ControlVersion), now, now, r.id); err != nil {
			return fmt.Errorf("outbox: write back %q (outbox id %d) as control_version %d: %w", r.eventID, r.id, stamped[0].ControlVersion, err)
		}
	case len(published) > 1:
		// Few statements for the chunk: per-row statements cost more than
		// the rows' own writes. Usually ids and ControlVersions both ascend
		// by one (one publisher on the stream, no dead rows in between):
		// one range statement per such run. Otherwise one statement with
		// the chunk's pairs as JSON.
		if runs := consecutiveRuns(published, stamped); len(runs) <= maxRangeRuns {
			for _, r := range runs {
				first, last := published[r.start], published[r.end-1]
				delta := int64(stamped[r.start].ControlVersion) - first.id
				if _, err := tx.ExecContext(ctx, p.dia.markPublishedRange, now, delta, first.id, last.id); err != nil {
					return fmt.Errorf("outbox: write back %d published rows (outbox ids %d..%d): %w", r.end-r.start, first.id, last.id, err)
				}
			}
		} else if _, err := tx.ExecContext(ctx, p.dia.markPublishedBatch, now, publishedPairs(published, stamped)); err != nil {
			return fmt.Errorf("outbox: write back %d published rows (outbox ids %d..%d): %w", len(published), published[0].id, published[len(published)-1].id, err)
		}
	}
	for _, d := range dead {
		if _, err := tx.ExecContext(ctx, p.dia.markDead, d.reason, now, d.row.id); err != nil {
			return fmt.Errorf("outbox: mark %q (outbox id %d) dead: %w", d.row.eventID, d.row.id, err)
		}
	}
	if head != nil {
		if _, err := tx.ExecContext(ctx, p.dia.upsertChain, int64(head.Seq), head.Digest, p.cfg.Signer.ID(), now); err != nil {
			return fmt.Errorf("outbox: record the signing chain head at seq %d: %w", head.Seq, err)
		}
	}
	if failed != nil {
		msg := pubErr.Error()
		if len(msg) > maxLastError {
			msg = strings.ToValidUTF8(msg[:maxLastError], "")
		}
		if _, err := tx.ExecContext(ctx, p.dia.markFailed, msg, now, failed.id); err != nil {
			return fmt.Errorf("outbox: record failed attempt of %q (outbox id %d): %w", failed.eventID, failed.id, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("outbox: write back %d published rows: commit: %w", len(published), err)
	}
	return nil
}

// maxRangeRuns is the most runs writeBack records with one range statement
// each; a chunk with more is recorded with one JSON statement.
const maxRangeRuns = 4

// run is published[start:end], a run of rows whose ids and ControlVersions
// both ascend by exactly one.
type run struct{ start, end int }

// consecutiveRuns splits the published rows into maximal runs. It stops
// counting after maxRangeRuns+1 runs.
func consecutiveRuns(published []pendingRow, stamped []controlevent.Event) []run {
	var runs []run
	start := 0
	for i := 1; i <= len(published); i++ {
		if i < len(published) && published[i].id == published[i-1].id+1 &&
			stamped[i].ControlVersion == stamped[i-1].ControlVersion+1 {
			continue
		}
		runs = append(runs, run{start, i})
		if len(runs) > maxRangeRuns {
			return runs
		}
		start = i
	}
	return runs
}

// publishedPairs encodes the chunk as the JSON array of [id, control_version]
// pairs that markPublishedBatch takes.
func publishedPairs(published []pendingRow, stamped []controlevent.Event) string {
	b := make([]byte, 0, len(published)*24)
	b = append(b, '[')
	for i, r := range published {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = strconv.AppendInt(b, r.id, 10)
		b = append(b, ',')
		b = strconv.AppendUint(b, stamped[i].ControlVersion, 10)
		b = append(b, ']')
	}
	return string(append(b, ']'))
}
