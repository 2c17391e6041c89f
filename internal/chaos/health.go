package chaos

import (
	"context"
	"time"

	"github.com/controlfeed/controlfeed/applier"
)

// The nodes run with a short stall threshold so that the suite can hold
// /healthz to it: no fault may leave a node that makes no progress while
// the stream has events for it answering 200 for longer than the threshold
// (plus the unavailable grace and the watcher's own sampling slack).
const (
	nodeStallThreshold = 10 * time.Second
	nodeUnavailGrace   = 3 * time.Second
	healthSlack        = 4 * time.Second
)

// healthWatch samples every node's cursor, the stream's last sequence and
// the node's /healthz every 500ms during the fault phase. A node is stuck
// from the first sample at which the stream holds events past its cursor
// until its cursor moves or its process restarts. A 200 from a node stuck for longer than
// nodeStallThreshold+nodeUnavailGrace+healthSlack is a violation, counted
// once per stuck period.
func (h *harness) healthWatch(ctx context.Context, done <-chan struct{}) {
	type track struct {
		cursor  uint64
		since   time.Time // zero: not stuck
		starts  int       // the node's process starts at since
		counted bool
		// opening: the process started but has not answered /healthz yet
		// (serve waits for its broker before it listens); the stuck
		// period begins when it first answers.
		opening bool
	}
	tr := make([]track, len(h.nodes))
	limit := nodeStallThreshold + nodeUnavailGrace + healthSlack
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case <-tick.C:
		}
		head, err := h.head(ctx)
		if err != nil {
			continue // broker down or feed locked: the sample says nothing
		}
		now := time.Now()
		for i := range h.nodes {
			c, err := applier.ReadCursor(ctx, h.nodeDB(i))
			if err != nil {
				continue
			}
			t := &tr[i]
			switch {
			case c != t.cursor || c >= head:
				t.cursor, t.since, t.counted = c, time.Time{}, false
				continue
			case t.since.IsZero() || h.nodes[i].startCount() != t.starts:
				// A node's /healthz judges its own process's lifetime: a
				// restart begins a new stuck period (docs/RELIABILITY.md),
				// from when the node answers (a node still waiting for its
				// broker to open its stores does not listen yet).
				t.since, t.starts, t.counted, t.opening = now, h.nodes[i].startCount(), false, true
				continue
			case t.opening:
				if h.healthz(i) != 0 {
					t.since, t.opening = now, false
				}
				continue
			}
			if t.counted || now.Sub(t.since) < limit {
				continue
			}
			if code := h.healthz(i); code == 200 {
				t.counted = true
				h.mu.Lock()
				h.rep.HealthyWhileStuck++
				h.rep.problem("%s: /healthz 200 while its cursor %d stayed below the stream's last sequence %d for %v (threshold %v + grace %v)",
					h.nodes[i].name, c, head, now.Sub(t.since).Round(time.Second), nodeStallThreshold, nodeUnavailGrace)
				h.mu.Unlock()
			} else if code != 0 {
				h.mu.Lock()
				h.rep.StuckReported++
				h.mu.Unlock()
				t.counted = true
			}
		}
	}
}
