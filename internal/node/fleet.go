package node

import (
	"context"
	"database/sql"
	"fmt"
	"sync"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/fleet"
)

// fleetCounts is what FleetReport keeps between reports so that a report
// never counts controlfeed_applied_events: the counts read once, at the
// first report, plus the applier's counters since, and the skipped events,
// read again only when the applier's skip counter moved.
type fleetCounts struct {
	mu                       sync.Mutex
	loaded                   bool
	baseApplied, baseSkipped int64  // rows at the first report
	procApplied, procSkipped uint64 // the applier's counters then
	skippedAt                uint64 // the applier's skip counter when skipped was read
	skipped                  []fleet.SkippedEvent
}

// FleetReport returns the node's fleet report (see package fleet) as of
// now, for a fleet.Reporter. It reads the applier's in-memory state, the
// state digest and its checkpoints in one short read transaction, and the
// application digest as Status does (computed at most every
// AppDigestInterval); it never waits for the apply path. Applied and
// Skipped are the rows counted at the first report plus what this process
// applied and skipped since. A process without an applier reports what
// its database says.
func (n *Node) FleetReport(ctx context.Context, version string) (fleet.Report, error) {
	r := fleet.Report{Node: n.cfg.NodeName, Version: version, StartedAt: n.started.UTC()}
	tx, err := n.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return r, fmt.Errorf("node: fleet report: begin: %w", err)
	}
	defer tx.Rollback()
	sd, err := applier.ReadStateDigest(ctx, tx)
	if err != nil {
		return r, fmt.Errorf("node: fleet report: %w", err)
	}
	cps, err := applier.ReadDigestCheckpoints(ctx, tx)
	if err != nil {
		return r, fmt.Errorf("node: fleet report: %w", err)
	}
	r.Cursor = sd.Cursor
	r.StateDigest = fleet.Digest{Cursor: sd.Cursor, Digest: sd.Digest}
	for _, c := range cps {
		if c.Cursor != sd.Cursor {
			r.DigestCheckpoints = append(r.DigestCheckpoints, fleet.Digest{Cursor: c.Cursor, Digest: c.Digest})
		}
	}
	var as applier.Status
	if n.applier != nil {
		as = n.applier.Status()
	}
	if err := n.fleetCounts(ctx, tx, as, &r); err != nil {
		return r, err
	}
	tx.Rollback()
	if a := n.appDigest(ctx); a != nil {
		r.AppDigest = &fleet.AppDigest{Cursor: a.Cursor, Digest: a.Digest, At: a.At.UTC()}
	}
	if n.applier == nil {
		return r, nil
	}
	r.State = as.State.String()
	if as.HeadKnown {
		h := max(as.Head, r.Cursor)
		lag := h - r.Cursor
		r.Head, r.Lag = &h, &lag
	}
	if h := as.Halted; h != nil {
		r.Halted = &fleet.Halt{EventID: h.EventID, ControlVersion: h.ControlVersion, Type: h.Type, Error: h.Error,
			Attempts: h.Attempts, Since: h.Since.UTC(), Security: h.Security}
	}
	if u := as.Unavailable; u != nil {
		r.Unavailable = &fleet.Unavailable{Op: u.Op, EventID: u.EventID, ControlVersion: u.ControlVersion, Error: u.Error, Since: u.Since.UTC()}
	}
	switch {
	case as.Gap != nil:
		r.Problem = fmt.Sprintf("gap in the feed: after cursor %d the next event delivered is %d: %s", as.Gap.Cursor, as.Gap.Next, as.Gap.Error)
	case as.BehindRetention != nil:
		r.Problem = as.BehindRetention.Error()
	case as.FeedBehindCursor != "":
		r.Problem = as.FeedBehindCursor
	}
	return r, nil
}

// fleetCounts fills r's counts and skipped events (see fleetCounts).
func (n *Node) fleetCounts(ctx context.Context, tx *sql.Tx, as applier.Status, r *fleet.Report) error {
	c := &n.fleet
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.loaded {
		rows, err := tx.QueryContext(ctx, `SELECT outcome, COUNT(*) FROM controlfeed_applied_events GROUP BY outcome`)
		if err != nil {
			return fmt.Errorf("node: fleet report: count applied events: %w", err)
		}
		for rows.Next() {
			var outcome string
			var k int64
			if err := rows.Scan(&outcome, &k); err != nil {
				rows.Close()
				return fmt.Errorf("node: fleet report: count applied events: %w", err)
			}
			switch outcome {
			case "applied":
				c.baseApplied = k
			case "skipped":
				c.baseSkipped = k
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("node: fleet report: count applied events: %w", err)
		}
		c.procApplied, c.procSkipped = as.Applied, as.Skipped
	}
	if !c.loaded || as.Skipped != c.skippedAt {
		rows, err := tx.QueryContext(ctx, `SELECT event_id, control_version FROM controlfeed_applied_events
			WHERE outcome = 'skipped' ORDER BY control_version DESC LIMIT ?`, fleet.MaxRecentSkipped)
		if err != nil {
			return fmt.Errorf("node: fleet report: read skipped events: %w", err)
		}
		var sk []fleet.SkippedEvent
		for rows.Next() {
			var e fleet.SkippedEvent
			var cv int64
			if err := rows.Scan(&e.EventID, &cv); err != nil {
				rows.Close()
				return fmt.Errorf("node: fleet report: read skipped events: %w", err)
			}
			e.ControlVersion = uint64(cv)
			sk = append(sk, e)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("node: fleet report: read skipped events: %w", err)
		}
		c.skipped, c.skippedAt = sk, as.Skipped
	}
	c.loaded = true
	r.Applied = c.baseApplied + int64(as.Applied-c.procApplied)
	r.Skipped = c.baseSkipped + int64(as.Skipped-c.procSkipped)
	r.RecentSkipped = append([]fleet.SkippedEvent(nil), c.skipped...)
	return nil
}
