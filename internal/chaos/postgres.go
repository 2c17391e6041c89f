package chaos

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/controlfeed/controlfeed/artifact/filestore"
	"github.com/controlfeed/controlfeed/feed/filesource"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/kv"
)

// The PostgreSQL mode (RunPostgres): the producer's outbox and kv table in
// PostgreSQL, two producer "controlfeed serve" processes competing for the
// pump (the outbox's drainer lock), SQLite nodes reading the file feed they
// write. An in-process writer makes kv changes throughout; the faults hit
// the drainer: SIGKILL of the process holding the lock, pg_terminate_backend
// of the holder's lock session, and restarts of the PostgreSQL server
// (pg_ctl restart -m immediate), plus SIGKILLs of the nodes. After the fault
// phase everything runs without faults until the nodes converge, and the
// checker proves what the other modes prove: no change lost, none applied
// twice or out of order, every node's table equal to the producer's. Every
// takeover (a new lock session holding the lock) is counted and timed from
// the fault that caused it.

// PostgresConfig configures RunPostgres. Zero fields select the defaults.
type PostgresConfig struct {
	// Binary is the controlfeed command (required).
	Binary string
	// Dir holds the nodes' databases, the feed, the artifacts and the
	// logs (required).
	Dir string
	// URL is the producer's PostgreSQL database (required; a fresh schema:
	// the run's tables are created there), without application_name.
	URL string
	// RestartPostgres restarts the server abruptly (pg_ctl restart -m
	// immediate) and returns once it accepts connections again; nil skips
	// the restarts (reported).
	RestartPostgres func() error
	// Nodes is the number of SQLite nodes. Default 2.
	Nodes int
	// Events is the number of writer changes. Default 2000.
	Events int
	// Duration is the fault phase. Default 20s.
	Duration time.Duration
	// HolderKills, Terminations and Restarts are the fault counts. Defaults
	// 4, 4 and 1.
	HolderKills, Terminations, Restarts int
	// NodeKills is the number of SIGKILLs of random nodes. Default 3.
	NodeKills int
	// Seed seeds the choices; 0 picks one from the clock.
	Seed uint64
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

func (c *PostgresConfig) setDefaults() {
	c.Nodes = cmpOr(c.Nodes, 2)
	c.Events = cmpOr(c.Events, 2000)
	c.Duration = cmpOr(c.Duration, 20*time.Second)
	c.HolderKills = cmpOr(c.HolderKills, 4)
	c.Terminations = cmpOr(c.Terminations, 4)
	c.Restarts = cmpOr(c.Restarts, 1)
	c.NodeKills = cmpOr(c.NodeKills, 3)
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano())
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Takeover is one change of the drainer lock's holder after a fault.
type Takeover struct {
	Fault    string // "sigkill", "terminate" or "restart"
	Duration time.Duration
}

// PostgresReport is the outcome of RunPostgres.
type PostgresReport struct {
	Seed                                uint64
	Events                              int // outbox rows
	FeedMessages, FeedDuplicates        int // files in the feed; repeats of an EventID (takeover overlaps)
	HolderKills, Terminations, Restarts int
	RestartsSkipped                     string
	NodeKills                           int
	Takeovers                           []Takeover
	Lost, AppliedTwice, OutOfOrder      int
	StatesDiffer                        int
	UnexpectedExits                     map[string]int
	FaultPhase, Elapsed                 time.Duration
	Problems                            []string
	mu                                  sync.Mutex
}

func (r *PostgresReport) problem(format string, args ...any) {
	r.mu.Lock()
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

// OK reports a run without problems.
func (r *PostgresReport) OK() bool { return len(r.Problems) == 0 }

// String is the report as CI prints it.
func (r *PostgresReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "chaos (PostgreSQL producer, two competing pumps): seed %d, fault phase %v, total %v\n",
		r.Seed, r.FaultPhase.Round(time.Second), r.Elapsed.Round(time.Second))
	fmt.Fprintf(&b, "  events %d; feed messages %d (%d repeats of an EventID from takeover overlaps)\n", r.Events, r.FeedMessages, r.FeedDuplicates)
	fmt.Fprintf(&b, "  faults: %d SIGKILLs of the lock holder, %d pg_terminate_backend of its lock session, %d PostgreSQL restarts, %d node SIGKILLs\n",
		r.HolderKills, r.Terminations, r.Restarts, r.NodeKills)
	if r.RestartsSkipped != "" {
		fmt.Fprintf(&b, "  restarts skipped: %s\n", r.RestartsSkipped)
	}
	var ds []time.Duration
	byFault := map[string]int{}
	for _, t := range r.Takeovers {
		ds = append(ds, t.Duration)
		byFault[t.Fault]++
	}
	slices.Sort(ds)
	if len(ds) > 0 {
		fmt.Fprintf(&b, "  takeovers %d (after sigkill %d, terminate %d, restart %d): min %v, median %v, max %v\n",
			len(ds), byFault["sigkill"], byFault["terminate"], byFault["restart"],
			ds[0].Round(time.Millisecond), ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
	} else {
		fmt.Fprintf(&b, "  takeovers 0\n")
	}
	fmt.Fprintf(&b, "  lost %d, applied twice %d, out of order %d, node states differing %d\n", r.Lost, r.AppliedTwice, r.OutOfOrder, r.StatesDiffer)
	for name, n := range r.UnexpectedExits {
		fmt.Fprintf(&b, "  unexpected exits of %s: %d\n", name, n)
	}
	if r.OK() {
		fmt.Fprintf(&b, "  verdict: OK\n")
	} else {
		fmt.Fprintf(&b, "  verdict: FAILED, %d problems:\n", len(r.Problems))
		for _, p := range r.Problems {
			fmt.Fprintf(&b, "    - %s\n", p)
		}
	}
	return b.String()
}

type pgHarness struct {
	cfg   PostgresConfig
	rng   *rand.Rand
	rmu   sync.Mutex
	logf  func(format string, args ...any)
	rep   *PostgresReport
	db    *sql.DB
	store *filestore.Store
	pumps []*proc
	nodes []*proc
	feed  string
	art   string
}

func (h *pgHarness) intn(n int) int {
	h.rmu.Lock()
	defer h.rmu.Unlock()
	return h.rng.IntN(n)
}

// RunPostgres performs one run of the PostgreSQL mode (see above). err is
// for a run that could not be performed; the report holds the problems.
func RunPostgres(ctx context.Context, cfg PostgresConfig) (*PostgresReport, error) {
	cfg.setDefaults()
	if cfg.Binary == "" || cfg.Dir == "" || cfg.URL == "" {
		return nil, fmt.Errorf("chaos: run postgres: Binary, Dir and URL are required")
	}
	h := &pgHarness{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 2)),
		rep:  &PostgresReport{Seed: cfg.Seed, UnexpectedExits: map[string]int{}},
		feed: filepath.Join(cfg.Dir, "feed"), art: filepath.Join(cfg.Dir, "artifacts")}
	h.logf = func(format string, args ...any) {
		fmt.Fprintf(cfg.Log, "chaos-pg %s: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
	start := time.Now()
	var err error
	if h.db, err = node.OpenPostgres(ctx, cfg.URL, "chaos harness"); err != nil {
		return nil, err
	}
	defer h.db.Close()
	if h.store, err = filestore.New(h.art, nil); err != nil {
		return nil, err
	}
	common := []string{"--feed-dir", h.feed, "--artifact-dir", h.art, "--poll-interval", "20ms"}
	env := func() []string { return []string{"PATH=" + os.Getenv("PATH")} }
	for _, name := range []string{"pump-a", "pump-b"} {
		h.pumps = append(h.pumps, &proc{name: name, env: env, logf: filepath.Join(cfg.Dir, name+".log"),
			argv: append([]string{cfg.Binary, "serve", "--db", cfg.URL, "--feed-sink", "file", "--node-name", name}, common...)})
	}
	for i := range cfg.Nodes {
		name := fmt.Sprintf("node%d", i+1)
		h.nodes = append(h.nodes, &proc{name: name, env: env, logf: filepath.Join(cfg.Dir, name+".log"),
			argv: append([]string{cfg.Binary, "serve", "--db", filepath.Join(cfg.Dir, name+".db"), "--feed-source", "file", "--node-name", name}, common...)})
	}
	h.logf("seed %d; %d events over %v, 2 pumps, %d nodes; dir %s", cfg.Seed, cfg.Events, cfg.Duration, cfg.Nodes, cfg.Dir)
	// The first pump creates the feed directory; nodes refuse a missing one.
	pctx, pcancel := context.WithCancel(ctx)
	var sup sync.WaitGroup
	defer func() { pcancel(); sup.Wait() }()
	for _, p := range h.pumps {
		sup.Go(func() { p.supervise(pctx, 20*time.Millisecond) })
	}
	if err := h.waitHolder(ctx, 0, 60*time.Second); err != nil {
		return nil, err
	}
	for _, p := range h.nodes {
		sup.Go(func() { p.supervise(pctx, 20*time.Millisecond) })
	}

	// Fault phase: the writer spreads its changes over Duration while the
	// faults are injected at random moments.
	fctx, fcancel := context.WithTimeout(ctx, cfg.Duration+2*time.Minute)
	defer fcancel()
	var wg sync.WaitGroup
	wg.Go(func() { h.write(fctx) })
	h.faults(fctx)
	wg.Wait()
	h.rep.FaultPhase = time.Since(start)

	h.logf("fault phase over after %v; converging", h.rep.FaultPhase.Round(time.Second))
	if err := h.converge(ctx, 2*time.Minute); err != nil {
		h.rep.problem("%v", err)
	}
	pcancel()
	sup.Wait()
	for _, p := range append(slices.Clone(h.pumps), h.nodes...) {
		if _, bad, last := p.stats(); bad > 0 {
			h.rep.UnexpectedExits[p.name] = bad
			h.rep.problem("%s exited unexpectedly %d times, last: %s", p.name, bad, last)
		}
	}
	if err := h.check(ctx); err != nil {
		h.rep.problem("check: %v", err)
	}
	h.rep.Elapsed = time.Since(start)
	return h.rep, nil
}

// write makes cfg.Events kv changes over cfg.Duration, retrying each until
// it commits (a Put cut by a restart may have committed anyway: its retry
// is one more change, which the checker counts from the outbox).
func (h *pgHarness) write(ctx context.Context) {
	start := time.Now()
	for i := range h.cfg.Events {
		// Paced by the schedule, not by a pause after each change: a slow
		// change (a restart, a takeover) does not stretch the phase.
		sleepCtx(ctx, time.Until(start.Add(h.cfg.Duration*time.Duration(i)/time.Duration(h.cfg.Events))))
		key := fmt.Sprintf("k%03d", h.intn(200))
		for ctx.Err() == nil {
			var err error
			if h.intn(8) == 0 {
				_, _, err = kv.Delete(ctx, h.db, key)
			} else {
				_, err = kv.Put(ctx, h.db, h.store, key, fmt.Appendf(nil, "v%d-%d", i, h.intn(1000)))
			}
			if err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// faults injects the fault counts at random moments of the fault phase, one
// at a time, each followed by the wait for the takeover it causes.
func (h *pgHarness) faults(ctx context.Context) {
	var plan []string
	for range h.cfg.HolderKills {
		plan = append(plan, "sigkill")
	}
	for range h.cfg.Terminations {
		plan = append(plan, "terminate")
	}
	if h.cfg.RestartPostgres != nil {
		for range h.cfg.Restarts {
			plan = append(plan, "restart")
		}
	} else if h.cfg.Restarts > 0 {
		h.rep.RestartsSkipped = "no way to restart the server was given (CONTROLFEED_TEST_POSTGRES_RESTART)"
	}
	for range h.cfg.NodeKills {
		plan = append(plan, "node")
	}
	h.rmu.Lock()
	h.rng.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })
	h.rmu.Unlock()
	gap := h.cfg.Duration / time.Duration(len(plan)+1)
	for _, f := range plan {
		sleepCtx(ctx, gap/2+time.Duration(h.intn(int(gap))))
		if ctx.Err() != nil {
			return
		}
		h.inject(ctx, f)
	}
}

// inject causes fault f and, for the drainer's faults, records the
// takeover that follows.
func (h *pgHarness) inject(ctx context.Context, f string) {
	if f == "node" {
		p := h.nodes[h.intn(len(h.nodes))]
		if p.killAndWait() {
			h.rep.NodeKills++
			h.logf("SIGKILL %s", p.name)
		}
		return
	}
	before, err := node.ReadStatus(ctx, h.db)
	if err != nil || before.PumpHolder == nil {
		h.logf("%s skipped: no holder to fault (%v)", f, err)
		return
	}
	old := before.PumpHolder.BackendPID
	at := time.Now()
	switch f {
	case "sigkill":
		p := h.holderProc(before.PumpHolder.ApplicationName)
		if p == nil || !p.killAndWait() {
			h.logf("sigkill skipped: holder %q is not one of the pumps", before.PumpHolder.ApplicationName)
			return
		}
		h.rep.HolderKills++
		h.logf("SIGKILL %s, the lock holder", p.name)
	case "terminate":
		var ok bool
		if err := h.db.QueryRowContext(ctx, `SELECT pg_terminate_backend($1)`, old).Scan(&ok); err != nil || !ok {
			h.logf("pg_terminate_backend(%d) failed: %v", old, err)
			return
		}
		h.rep.Terminations++
		h.logf("pg_terminate_backend(%d), the holder's lock session", old)
	case "restart":
		if err := h.cfg.RestartPostgres(); err != nil {
			h.rep.problem("restart PostgreSQL: %v", err)
			return
		}
		h.rep.Restarts++
		h.logf("PostgreSQL restarted (-m immediate) in %v", time.Since(at).Round(time.Millisecond))
	}
	if err := h.waitHolder(ctx, old, 60*time.Second); err != nil {
		h.rep.problem("after %s: %v", f, err)
		return
	}
	d := time.Since(at)
	h.rep.Takeovers = append(h.rep.Takeovers, Takeover{Fault: f, Duration: d})
	h.logf("new lock holder %v after the %s", d.Round(time.Millisecond), f)
}

// holderProc returns the pump whose process the application name names.
func (h *pgHarness) holderProc(app string) *proc {
	for _, p := range h.pumps {
		if pid := p.pid(); pid != 0 && strings.HasSuffix(app, fmt.Sprintf(" pid %d", pid)) {
			return p
		}
	}
	return nil
}

// waitHolder waits until a lock session other than old holds the drainer
// lock.
func (h *pgHarness) waitHolder(ctx context.Context, old int64, timeout time.Duration) error {
	end := time.Now().Add(timeout)
	for time.Now().Before(end) && ctx.Err() == nil {
		st, err := node.ReadStatus(ctx, h.db)
		if err == nil && st.PumpHolder != nil && st.PumpHolder.BackendPID != old {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("no pump took the drainer lock within %v", timeout)
}

// converge waits for an empty outbox and every node at the feed's head.
func (h *pgHarness) converge(ctx context.Context, timeout time.Duration) error {
	end := time.Now().Add(timeout)
	want := ""
	for time.Now().Before(end) {
		st, err := node.ReadStatus(ctx, h.db)
		if err == nil && st.OutboxPending == 0 {
			if want, err = kv.Digest(ctx, h.db); err == nil && h.nodesAt(ctx, want) {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the nodes did not converge within %v (producer digest %s)", timeout, want)
}

func (h *pgHarness) nodesAt(ctx context.Context, want string) bool {
	for i := range h.nodes {
		db, err := node.OpenDBReadOnly(ctx, filepath.Join(h.cfg.Dir, fmt.Sprintf("node%d.db", i+1)))
		if err != nil {
			return false
		}
		got, err := kv.Digest(ctx, db)
		db.Close()
		if err != nil || got != want {
			return false
		}
	}
	return true
}

// check compares the outbox, the feed and every node.
func (h *pgHarness) check(ctx context.Context) error {
	r := h.rep
	rows, err := h.db.QueryContext(ctx, `SELECT event_id, published_control_version IS NOT NULL FROM controlfeed_outbox ORDER BY id`)
	if err != nil {
		return err
	}
	var ids []string
	pos := map[string]int{}
	for rows.Next() {
		var id string
		var pub bool
		if err := rows.Scan(&id, &pub); err != nil {
			rows.Close()
			return err
		}
		pos[id] = len(ids)
		ids = append(ids, id)
		if !pub {
			r.Lost++
			r.problem("outbox row %s never published", id)
		}
	}
	rows.Close()
	r.Events = len(ids)

	// The feed: the first copy of each EventID, in outbox order.
	src, err := filesource.NewSource(h.feed, &filesource.Options{})
	if err != nil {
		return err
	}
	first := map[string]uint64{}
	last := -1
	for after := uint64(0); ; {
		evs, err := src.Poll(ctx, after)
		if err != nil {
			return fmt.Errorf("read the feed: %w", err)
		}
		if len(evs) == 0 {
			break
		}
		for _, e := range evs {
			after = e.ControlVersion
			r.FeedMessages++
			if _, ok := first[e.EventID]; ok {
				r.FeedDuplicates++
				continue
			}
			first[e.EventID] = e.ControlVersion
			p, ok := pos[e.EventID]
			if !ok {
				r.problem("feed event %s at %d is not in the outbox", e.EventID, e.ControlVersion)
				continue
			}
			if p < last {
				r.OutOfOrder++
				r.problem("feed: event %s (outbox row %d) first published after outbox row %d", e.EventID, p, last)
			}
			last = max(last, p)
		}
	}
	want, err := kv.Digest(ctx, h.db)
	if err != nil {
		return err
	}
	for i := range h.nodes {
		name := fmt.Sprintf("node%d", i+1)
		if err := h.checkNode(ctx, name, ids, pos, want); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// checkNode checks one node: every outbox event applied exactly once, in
// outbox order, and its table equal to the producer's.
func (h *pgHarness) checkNode(ctx context.Context, name string, ids []string, pos map[string]int, want string) error {
	r := h.rep
	db, err := node.OpenDBReadOnly(ctx, filepath.Join(h.cfg.Dir, name+".db"))
	if err != nil {
		return err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `SELECT event_id, outcome FROM controlfeed_applied_events ORDER BY control_version`)
	if err != nil {
		return err
	}
	seen := map[string]int{}
	last := -1
	for rows.Next() {
		var id, outcome string
		if err := rows.Scan(&id, &outcome); err != nil {
			rows.Close()
			return err
		}
		seen[id]++
		if seen[id] == 2 {
			r.AppliedTwice++
			r.problem("%s applied %s twice", name, id)
		}
		if outcome != "applied" {
			r.problem("%s: event %s has outcome %q", name, id, outcome)
		}
		p, ok := pos[id]
		if !ok {
			continue
		}
		if p < last {
			r.OutOfOrder++
			r.problem("%s applied outbox row %d after row %d", name, p, last)
		}
		last = max(last, p)
	}
	rows.Close()
	for _, id := range ids {
		if seen[id] == 0 {
			r.Lost++
			r.problem("%s never applied %s", name, id)
		}
	}
	got, err := kv.Digest(ctx, db)
	if err != nil {
		return err
	}
	if got != want {
		r.StatesDiffer++
		r.problem("%s table digest %s, producer %s", name, got, want)
	}
	return nil
}
