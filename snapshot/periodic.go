package snapshot

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/internal/failpoint"
)

// DefaultKeep is PeriodicConfig.Keep's default: the snapshots kept by the
// periodic garbage collection, the latest included.
const DefaultKeep = 3

// DefaultCheckInterval is PeriodicConfig.CheckInterval's default.
const DefaultCheckInterval = time.Second

// DefaultCoverCheckInterval is PeriodicConfig.CoverCheckInterval's default.
const DefaultCoverCheckInterval = 10 * time.Second

// PeriodicConfig configures a Periodic snapshotter. DB, Store, Catalog and
// one of Every or Interval are required.
type PeriodicConfig struct {
	// DB is the live node database to snapshot (the applier keeps writing
	// to it: see Create).
	DB *sql.DB
	// Store receives the snapshot artifacts; Catalog records them.
	Store   artifact.Store
	Catalog Catalog
	// Every takes a snapshot once the node's cursor is Every or more
	// events past the feed's latest published snapshot; 0 disables it.
	Every uint64
	// Interval takes a snapshot once the latest published snapshot is
	// Interval old and the cursor has moved past it; 0 disables it.
	Interval time.Duration
	// Keep is how many snapshots the garbage collection after each publish
	// keeps (Prune); 0 means DefaultKeep, negative disables the
	// collection.
	Keep int
	// CheckInterval is how often the cursor is compared with the cadence;
	// 0 means DefaultCheckInterval.
	CheckInterval time.Duration
	// Create configures each Create (Node, TempDir; Progress is ignored).
	Create CreateOptions
	// Covers, if set, reports whether the feed still holds the event after
	// cursor (behind = false), or the oldest event it holds: Periodic asks
	// it about the latest published snapshot after each publish and every
	// CoverCheckInterval, and reports Uncovered when a joining node could
	// not catch up from that snapshot; while Uncovered, a snapshot is due
	// as soon as the node's cursor is past the latest's (whatever Every and
	// Interval say), so the node repairs the fleet's coverage itself. An
	// error leaves the state as it was.
	Covers func(ctx context.Context, cursor uint64) (firstAvailable uint64, behind bool, err error)
	// CoverCheckInterval is the period of the Covers check; 0 means
	// DefaultCoverCheckInterval.
	CoverCheckInterval time.Duration
	// Logger receives one line per snapshot and per failure; nil discards.
	Logger *slog.Logger
	// Registerer, if set, receives the snapshotter's metrics
	// (controlfeed_snapshot_*).
	Registerer prometheus.Registerer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Validate reports whether c is usable.
func (c *PeriodicConfig) Validate() error {
	switch {
	case c == nil:
		return errors.New("snapshot: periodic: nil config")
	case c.DB == nil || c.Store == nil || c.Catalog == nil:
		return errors.New("snapshot: periodic: DB, Store and Catalog are required")
	case c.Every == 0 && c.Interval <= 0:
		return errors.New("snapshot: periodic: set Every (events) or Interval (a duration), or both")
	case c.Interval < 0 || c.CheckInterval < 0 || c.CoverCheckInterval < 0:
		return fmt.Errorf("snapshot: periodic: negative interval (interval %s, check %s, cover check %s)", c.Interval, c.CheckInterval, c.CoverCheckInterval)
	}
	return c.Create.Validate()
}

func (c *PeriodicConfig) setDefaults() {
	if c.Keep == 0 {
		c.Keep = DefaultKeep
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = DefaultCheckInterval
	}
	if c.CoverCheckInterval == 0 {
		c.CoverCheckInterval = DefaultCoverCheckInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Create.Progress = nil
	if c.Create.Now == nil {
		c.Create.Now = c.Now
	}
}

// PeriodicStatus is what a Periodic snapshotter has done, for status pages.
type PeriodicStatus struct {
	// Every and Interval are the configured cadence (Interval in Go
	// duration syntax, "" when unset).
	Every    uint64 `json:"every,omitempty"`
	Interval string `json:"interval,omitempty"`
	// Latest is the feed's latest published snapshot as last seen (taken
	// by this node or another), nil before any.
	Latest *Record `json:"latest,omitempty"`
	// LastCreated is the latest snapshot this process published, nil
	// before its first.
	LastCreated *Record `json:"last_created,omitempty"`
	// Created, Failures and Pruned count this process's snapshots
	// published, attempts failed, and old snapshots garbage-collected.
	Created  int64 `json:"created"`
	Failures int64 `json:"failures"`
	Pruned   int64 `json:"pruned"`
	// LastError is the latest failure's message, "" after a success.
	LastError string `json:"last_error,omitempty"`
	// Uncovered is set when the feed no longer holds the event after the
	// latest snapshot's cursor: a node joining or behind the retention
	// cannot bootstrap from it until a newer one is published.
	// FirstAvailable is then the oldest event the feed holds.
	Uncovered      bool   `json:"uncovered"`
	FirstAvailable uint64 `json:"first_available,omitempty"`
}

// Periodic takes, publishes and garbage-collects a node's snapshots on a
// cadence while the node runs (see PeriodicConfig). Its methods are safe
// for concurrent use; Run is called once.
type Periodic struct {
	c  PeriodicConfig
	mu sync.Mutex
	st PeriodicStatus
	// coverAt is when Covers was last asked.
	coverAt time.Time
}

// NewPeriodic validates cfg and returns a snapshotter; nothing runs until
// Run. With cfg.Registerer it registers its metrics there.
func NewPeriodic(cfg *PeriodicConfig) (*Periodic, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := *cfg
	c.setDefaults()
	p := &Periodic{c: c}
	p.st.Every = c.Every
	if c.Interval > 0 {
		p.st.Interval = c.Interval.String()
	}
	if c.Registerer != nil {
		if err := p.register(c.Registerer); err != nil {
			return nil, fmt.Errorf("snapshot: periodic: register metrics: %w", err)
		}
	}
	return p, nil
}

// Status returns a copy of the snapshotter's state.
func (p *Periodic) Status() PeriodicStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.st
	if st.Latest != nil {
		r := *st.Latest
		st.Latest = &r
	}
	if st.LastCreated != nil {
		r := *st.LastCreated
		st.LastCreated = &r
	}
	return st
}

// Run checks the cadence every CheckInterval until ctx is done, then
// returns nil. A due snapshot is created with Create (the node keeps
// applying), published to the catalog and followed by Prune. Failures are
// logged, counted and retried with capped backoff; they never stop Run (a
// snapshot is an optimisation of joining, not part of applying). A crash
// mid-snapshot leaves at most unreferenced artifacts (see Create, Prune).
func (p *Periodic) Run(ctx context.Context) error {
	t := time.NewTicker(p.c.CheckInterval)
	defer t.Stop()
	var retryAt time.Time
	backoff := p.c.CheckInterval
	p.refreshLatest(ctx)
	for {
		if now := p.c.Now(); !now.Before(retryAt) {
			err := p.tick(ctx)
			if err != nil && ctx.Err() == nil {
				p.fail(err)
				retryAt = now.Add(backoff)
				backoff = min(2*backoff, time.Minute)
			} else {
				backoff = p.c.CheckInterval
			}
		}
		p.checkCover(ctx, false)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// tick takes a snapshot if one is due.
func (p *Periodic) tick(ctx context.Context) error {
	cursor, err := readCursor(ctx, p.c.DB)
	if err != nil {
		return err
	}
	if !p.due(cursor) {
		return nil
	}
	// Another node may have published since: look again before copying.
	if err := p.refreshLatest(ctx); err != nil {
		return err
	}
	if !p.due(cursor) {
		return nil
	}
	return p.snapshot(ctx)
}

// due reports whether the cadence calls for a snapshot at cursor.
func (p *Periodic) due(cursor uint64) bool {
	p.mu.Lock()
	latest, uncovered := p.st.Latest, p.st.Uncovered
	p.mu.Unlock()
	if cursor == 0 {
		return false
	}
	if latest == nil {
		return true
	}
	if cursor <= latest.ControlVersion {
		return false
	}
	if uncovered {
		return true // the feed no longer holds what follows the latest: a newer one is needed now
	}
	if p.c.Every > 0 && cursor-latest.ControlVersion >= p.c.Every {
		return true
	}
	return p.c.Interval > 0 && p.c.Now().Sub(latest.PublishedAt) >= p.c.Interval
}

// refreshLatest reads the catalog's latest record.
func (p *Periodic) refreshLatest(ctx context.Context) error {
	r, err := p.c.Catalog.Latest(ctx)
	if errors.Is(err, ErrNoSnapshot) || errors.Is(err, ErrNoCatalog) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("snapshot: periodic: latest: %w", err)
	}
	p.mu.Lock()
	if p.st.Latest == nil || p.st.Latest.Manifest != r.Manifest {
		p.coverAt = time.Time{} // a new latest: check it soon
	}
	p.st.Latest = &r
	p.mu.Unlock()
	return nil
}

// snapshot creates, publishes and prunes.
func (p *Periodic) snapshot(ctx context.Context) error {
	start := time.Now()
	m, err := Create(ctx, p.c.DB, p.c.Store, &p.c.Create)
	if err != nil {
		return fmt.Errorf("snapshot: periodic: %w", err)
	}
	if err := failpoint.Inject(failpoint.SnapshotPublishBeforeCatalog); err != nil {
		return fmt.Errorf("snapshot: periodic: publish %s: %w", m.Ref, err)
	}
	rec := RecordOf(m, p.c.Now())
	if err := p.c.Catalog.Publish(ctx, rec); errors.Is(err, ErrOlder) {
		p.c.Logger.Info("snapshot: periodic: another node published a newer snapshot meanwhile; not publishing this one", "snapshot", m.Ref, "cursor", m.ControlVersion)
		return p.refreshLatest(ctx)
	} else if err != nil {
		return fmt.Errorf("snapshot: periodic: publish %s (cursor %d): %w", m.Ref, m.ControlVersion, err)
	}
	p.mu.Lock()
	p.st.Latest, p.st.LastCreated = &rec, &rec
	p.st.Created++
	p.st.LastError = ""
	p.coverAt = time.Time{}
	p.mu.Unlock()
	p.c.Logger.Info("snapshot: periodic: published a snapshot", "snapshot", m.Ref, "cursor", m.ControlVersion,
		"applied_events", m.AppliedEvents, "bytes", m.Database.Size, "took", time.Since(start).Round(time.Millisecond))
	if p.c.Keep < 0 {
		return nil
	}
	res, err := Prune(ctx, p.c.Catalog, p.c.Store, p.c.Keep)
	p.mu.Lock()
	p.st.Pruned += int64(len(res.Forgotten))
	p.mu.Unlock()
	if len(res.Forgotten) > 0 {
		p.c.Logger.Info("snapshot: periodic: removed old snapshots", "snapshots", len(res.Forgotten),
			"artifacts_deleted", res.DeletedArtifacts, "keep", p.c.Keep, "store_cannot_delete", res.KeptArtifacts)
	}
	if err != nil {
		return fmt.Errorf("snapshot: periodic: %w", err)
	}
	return nil
}

// fail records a failed attempt.
func (p *Periodic) fail(err error) {
	p.mu.Lock()
	p.st.Failures++
	p.st.LastError = err.Error()
	p.mu.Unlock()
	p.c.Logger.Error("snapshot: periodic: snapshot failed; retrying", "err", err)
}

// checkCover asks Covers about the latest snapshot when due (or force).
func (p *Periodic) checkCover(ctx context.Context, force bool) {
	if p.c.Covers == nil {
		return
	}
	p.mu.Lock()
	latest, at := p.st.Latest, p.coverAt
	p.mu.Unlock()
	now := p.c.Now()
	if !force && !at.IsZero() && now.Sub(at) < p.c.CoverCheckInterval {
		return
	}
	var cursor uint64 // no snapshot: does the feed still hold event 1?
	if latest != nil {
		cursor = latest.ControlVersion
	}
	first, behind, err := p.c.Covers(ctx, cursor)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.coverAt = now
	if err != nil {
		return
	}
	if behind && !p.st.Uncovered {
		p.c.Logger.Error("snapshot: no published snapshot covers the feed's retention: a node joining now, or one behind the retention, cannot catch up until a newer snapshot is published",
			"snapshot_cursor", cursor, "first_available", first)
	}
	p.st.Uncovered, p.st.FirstAvailable = behind, first
	if !behind {
		p.st.FirstAvailable = 0
	}
}

// readCursor reads the node's cursor.
func readCursor(ctx context.Context, db *sql.DB) (uint64, error) {
	var cv int64
	err := db.QueryRowContext(ctx, `SELECT control_version FROM controlfeed_cursor WHERE id = 1`).Scan(&cv)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("snapshot: periodic: read cursor: %w", err)
	}
	return uint64(cv), nil
}

// register adds the snapshotter's metrics to reg.
func (p *Periodic) register(reg prometheus.Registerer) error {
	gauge := func(name, help string, f func(PeriodicStatus) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(p.Status()) })
	}
	counter := func(name, help string, f func(PeriodicStatus) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return f(p.Status()) })
	}
	cs := []prometheus.Collector{
		gauge("controlfeed_snapshot_latest_cursor", "Cursor of the feed's latest published snapshot as last seen by this node (0 before any).",
			func(s PeriodicStatus) float64 {
				if s.Latest == nil {
					return 0
				}
				return float64(s.Latest.ControlVersion)
			}),
		gauge("controlfeed_snapshot_latest_timestamp_seconds", "Unix time the feed's latest published snapshot was published (0 before any).",
			func(s PeriodicStatus) float64 {
				if s.Latest == nil {
					return 0
				}
				return float64(s.Latest.PublishedAt.UnixNano()) / 1e9
			}),
		gauge("controlfeed_snapshot_uncovered", "1 when the feed no longer holds the event after the latest snapshot's cursor: joining or lagging nodes cannot bootstrap until a newer one is published.",
			func(s PeriodicStatus) float64 { return flag01(s.Uncovered) }),
		counter("controlfeed_snapshots_created_total", "Snapshots this process created and published.",
			func(s PeriodicStatus) float64 { return float64(s.Created) }),
		counter("controlfeed_snapshot_failures_total", "Failed periodic snapshot attempts of this process.",
			func(s PeriodicStatus) float64 { return float64(s.Failures) }),
		counter("controlfeed_snapshots_pruned_total", "Old snapshots this process removed from the catalog.",
			func(s PeriodicStatus) float64 { return float64(s.Pruned) }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func flag01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
