package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Defaults of ReporterConfig.
const (
	DefaultDebounce   = time.Second
	DefaultHeartbeat  = 10 * time.Second
	DefaultPutTimeout = 5 * time.Second
)

// Snapshot returns the node's report as of now. The Reporter fills Format,
// ReportedAt and Seq. It must read a snapshot of the node's state (memory,
// a short read transaction) and never wait for the apply path.
type Snapshot func(ctx context.Context) (Report, error)

// ReporterConfig configures a Reporter; the zero value selects the
// defaults.
type ReporterConfig struct {
	// Debounce is how often the Reporter looks at the node, and so the
	// least time between two reports (DefaultDebounce).
	Debounce time.Duration
	// Heartbeat is the longest time between two reports of an unchanged
	// node (DefaultHeartbeat); readers call a node stale after a few
	// missed heartbeats.
	Heartbeat time.Duration
	// PutTimeout bounds one write to the Store (DefaultPutTimeout).
	PutTimeout time.Duration
	// Logger receives failed writes; nil discards them.
	Logger *slog.Logger
}

func (c *ReporterConfig) setDefaults() {
	if c.Debounce == 0 {
		c.Debounce = DefaultDebounce
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.PutTimeout == 0 {
		c.PutTimeout = DefaultPutTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports negative durations and a heartbeat shorter than the
// debounce.
func (c *ReporterConfig) Validate() error {
	if c.Debounce < 0 || c.Heartbeat < 0 || c.PutTimeout < 0 {
		return fmt.Errorf("fleet: reporter config: negative duration (debounce %v, heartbeat %v, put timeout %v)", c.Debounce, c.Heartbeat, c.PutTimeout)
	}
	if c.Heartbeat != 0 && c.Debounce != 0 && c.Heartbeat < c.Debounce {
		return fmt.Errorf("fleet: reporter config: heartbeat %v is shorter than the debounce %v", c.Heartbeat, c.Debounce)
	}
	return nil
}

// ReporterStats counts a Reporter's writes.
type ReporterStats struct {
	Published, Failures uint64
	LastError           string
	LastPublishedAt     time.Time
}

// Reporter writes a node's reports to a Store: when the node changed
// (looked at every Debounce) and every Heartbeat. Create it with
// NewReporter and run it with Run; Stats is safe for concurrent use.
type Reporter struct {
	store Store
	snap  Snapshot
	cfg   ReporterConfig

	seq     uint64
	lastKey []byte
	lastPut time.Time
	failing bool // the last attempt failed: later failures log at debug

	mu    sync.Mutex
	stats ReporterStats
}

// NewReporter returns a Reporter writing snap's reports to store. cfg may
// be nil.
func NewReporter(store Store, snap Snapshot, cfg *ReporterConfig) (*Reporter, error) {
	if store == nil || snap == nil {
		return nil, errors.New("fleet: new reporter: nil store or snapshot")
	}
	var c ReporterConfig
	if cfg != nil {
		c = *cfg
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c.setDefaults()
	return &Reporter{store: store, snap: snap, cfg: c}, nil
}

// Run reports at once, then as described on Reporter, until ctx is done;
// it returns nil then. Failures (of the snapshot or the store) are logged
// and retried at the next look; they never stop Run.
func (r *Reporter) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Debounce)
	defer t.Stop()
	for {
		r.Tick(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Tick looks at the node once and writes a report if it changed since the
// last written one or the heartbeat is due. It reports whether it wrote
// one. Run calls it; tests may drive a Reporter with it instead (not
// concurrently with Run).
func (r *Reporter) Tick(ctx context.Context) bool {
	rep, err := r.snap(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.fail(fmt.Errorf("fleet: report: snapshot: %w", err))
		}
		return false
	}
	key := changeKey(rep)
	if r.lastKey != nil && bytes.Equal(key, r.lastKey) && time.Since(r.lastPut) < r.cfg.Heartbeat {
		return false
	}
	r.seq++
	rep.Format, rep.Seq, rep.ReportedAt = Format, r.seq, time.Now().UTC()
	pctx, cancel := context.WithTimeout(ctx, r.cfg.PutTimeout)
	err = r.store.Put(pctx, rep)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			r.fail(err)
		}
		return false
	}
	r.lastKey, r.lastPut, r.failing = key, time.Now(), false
	r.mu.Lock()
	r.stats.Published++
	r.stats.LastPublishedAt = time.Now()
	r.mu.Unlock()
	return true
}

func (r *Reporter) fail(err error) {
	r.mu.Lock()
	r.stats.Failures++
	r.stats.LastError = err.Error()
	r.mu.Unlock()
	// Warn once per streak of failures; the rest at debug.
	first := !r.failing
	r.failing = true
	if first {
		r.cfg.Logger.Warn("fleet: node report not written; retrying", "store", r.store.Name(), "err", err)
	} else {
		r.cfg.Logger.Debug("fleet: node report not written; retrying", "store", r.store.Name(), "err", err)
	}
}

// Stats returns the Reporter's counters.
func (r *Reporter) Stats() ReporterStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// changeKey is what must change for a report to be written before the
// heartbeat: everything but the report's own time and sequence, the
// application digest's time and the attempt counts.
func changeKey(r Report) []byte {
	r.ReportedAt, r.Seq = time.Time{}, 0
	if r.AppDigest != nil {
		a := *r.AppDigest
		a.At = time.Time{}
		r.AppDigest = &a
	}
	if r.Halted != nil {
		h := *r.Halted
		h.Attempts = 0
		r.Halted = &h
	}
	b, _ := json.Marshal(r)
	return b
}
