package chaos

import (
	"context"
	"time"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
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
// until its cursor moves. A 200 from a node stuck for longer than
// nodeStallThreshold+nodeUnavailGrace+healthSlack is a violation, counted
// once per stuck period.
func (h *harness) healthWatch(ctx context.Context, done <-chan struct{}) {
	type track struct {
		cursor  uint64
		since   time.Time // zero: not stuck
		counted bool
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
		head, ok := h.streamLastSeq(ctx)
		if !ok {
			continue // broker down: the sample says nothing
		}
		now := time.Now()
		for i := range h.nodes {
			c, err := applier.ReadCursor(ctx, h.ndb[i])
			if err != nil {
				continue
			}
			t := &tr[i]
			switch {
			case c != t.cursor || c >= head:
				t.cursor, t.since, t.counted = c, time.Time{}, false
				continue
			case t.since.IsZero():
				t.since = now
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

// streamLastSeq returns the feed stream's last sequence, false if the
// broker does not answer.
func (h *harness) streamLastSeq(ctx context.Context) (uint64, bool) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	st, err := h.js.Stream(ctx, natsfeed.DefaultStream)
	if err != nil {
		return 0, false
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, false
	}
	return info.State.LastSeq, true
}
