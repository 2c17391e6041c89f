package node

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/internal/metrics"
	"github.com/controlfeed/controlfeed/outbox"
)

// Status is a node's state as /v1/status and "controlfeed status --json"
// show it. Fields a process cannot know (the feed head without a running
// applier, pump counters without a running pump) are null or omitted.
type Status struct {
	// Node is Config.NodeName ("" when read from the database alone).
	Node string `json:"node,omitempty"`
	// FeedSource and FeedSink are the backends (empty when read from the
	// database alone).
	FeedSource string `json:"feed_source,omitempty"`
	FeedSink   string `json:"feed_sink,omitempty"`

	// Cursor is the highest ControlVersion the node has moved past.
	Cursor uint64 `json:"cursor"`
	// Head is the feed's newest ControlVersion, when the source reports it.
	Head *uint64 `json:"head"`
	// Lag is Head - Cursor, when Head is known.
	Lag *uint64 `json:"lag"`
	// Applied and Skipped count the events in applied_events by outcome.
	Applied int64 `json:"applied"`
	Skipped int64 `json:"skipped"`
	// Conflicts counts conflicting duplicates ever detected: an applied
	// EventID delivered again with different content (never applied; see
	// applier.ErrConflict).
	Conflicts int64 `json:"conflicts"`
	// Halted is the event the applier is stuck on, or null.
	Halted *Halt `json:"halted"`
	// BehindRetention explains why the node cannot catch up by replay, or
	// is empty.
	BehindRetention string `json:"behind_retention,omitempty"`
	// FeedBehindCursor explains that the feed's head fell below the node's
	// cursor (the feed was recreated or lost events; re-bootstrap), or is
	// empty. It stays until the process restarts. See
	// applier.Status.FeedBehindCursor.
	FeedBehindCursor string `json:"feed_behind_cursor,omitempty"`

	// OutboxPending and OutboxDead count the producer's outbox rows.
	OutboxPending int64 `json:"outbox_pending"`
	OutboxDead    int64 `json:"outbox_dead"`
	// OutboxOldestPending is when the oldest pending row was appended.
	OutboxOldestPending *time.Time `json:"outbox_oldest_pending,omitempty"`

	// Process holds this process's counters since it started; omitted when
	// read from the database alone.
	Process *ProcessStatus `json:"process,omitempty"`
}

// Halt describes the event the applier is stuck on.
type Halt struct {
	EventID        string    `json:"event_id"`
	ControlVersion uint64    `json:"control_version"`
	Type           string    `json:"type"`
	Error          string    `json:"error"`
	Attempts       int       `json:"attempts"`
	Since          time.Time `json:"since"`
	LastAttempt    time.Time `json:"last_attempt"`
}

// ProcessStatus holds the counters of the running pump and applier.
type ProcessStatus struct {
	StartedAt     time.Time  `json:"started_at"`
	Applied       uint64     `json:"applied"`
	Skipped       uint64     `json:"skipped"`
	Duplicates    uint64     `json:"duplicates"`
	LastApplyAt   *time.Time `json:"last_apply_at,omitempty"`
	Published     uint64     `json:"published"`
	PublishErrors uint64     `json:"publish_errors"`
	// PumpRetrying is true while the pump backs off after a failed pass;
	// PumpLastError is the latest failure, even if since recovered.
	PumpRetrying  bool   `json:"pump_retrying"`
	PumpLastError string `json:"pump_last_error,omitempty"`
	// PumpError is the error that stopped the pump for good.
	PumpError string `json:"pump_error,omitempty"`
	// FeedError is why the applier's latest read of the feed failed, and
	// FeedErrorSince since when reads have been failing (unset while
	// reads succeed).
	FeedError      string     `json:"feed_error,omitempty"`
	FeedErrorSince *time.Time `json:"feed_error_since,omitempty"`
}

// FeedErrorGrace is how long reads of the feed may fail (a broker restart,
// a file being written in place) before the node reports itself unhealthy.
const FeedErrorGrace = 10 * time.Second

func haltFrom(h *applier.Halt) *Halt {
	if h == nil {
		return nil
	}
	return &Halt{EventID: h.EventID, ControlVersion: h.ControlVersion, Type: h.Type, Error: h.Error,
		Attempts: h.Attempts, Since: h.Since, LastAttempt: h.LastAttempt}
}

// ReadStatus reads what the database alone says about a node: cursor, applied
// and skipped counts, the persisted halt, and the outbox counts. Any process
// may call it while another runs the node.
func ReadStatus(ctx context.Context, db *sql.DB) (Status, error) {
	st, err := applier.ReadStatus(ctx, db)
	if err != nil {
		return Status{}, fmt.Errorf("node: read status: %w", err)
	}
	oc, err := outbox.ReadCounts(ctx, db)
	if err != nil {
		return Status{}, fmt.Errorf("node: read status: %w", err)
	}
	s := Status{
		Cursor:        st.Cursor,
		Applied:       st.Applied,
		Skipped:       st.Skipped,
		Conflicts:     st.Conflicts,
		Halted:        haltFrom(st.Halted),
		OutboxPending: oc.Pending,
		OutboxDead:    oc.Dead,
	}
	if !oc.OldestPending.IsZero() {
		t := oc.OldestPending
		s.OutboxOldestPending = &t
	}
	return s, nil
}

// Status combines ReadStatus with the live state of the running pump and
// applier.
func (n *Node) Status(ctx context.Context) (Status, error) {
	s, err := ReadStatus(ctx, n.db)
	if err != nil {
		return s, err
	}
	s.Node = n.cfg.NodeName
	s.FeedSource, s.FeedSink = n.cfg.FeedSource, n.cfg.FeedSink
	p := &ProcessStatus{StartedAt: n.started}
	if n.applier != nil {
		as := n.applier.Status()
		if as.Cursor > s.Cursor {
			s.Cursor = as.Cursor
		}
		if as.HeadKnown {
			// The applier refreshes the head now and then; the feed holds
			// at least what the node applied, so a stale head is raised to
			// the cursor rather than shown below it.
			h := max(as.Head, s.Cursor)
			lag := h - s.Cursor
			s.Head, s.Lag = &h, &lag
		}
		s.Halted = haltFrom(as.Halted)
		if as.BehindRetention != nil {
			s.BehindRetention = as.BehindRetention.Error()
		}
		s.FeedBehindCursor = as.FeedBehindCursor
		p.Applied, p.Skipped, p.Duplicates = as.Applied, as.Skipped, as.Duplicates
		if u := as.Unavailable; u != nil && u.Op == applier.OpPoll {
			t := u.Since
			p.FeedError, p.FeedErrorSince = u.Error, &t
		}
		if !as.LastApplyAt.IsZero() {
			t := as.LastApplyAt
			p.LastApplyAt = &t
		}
	}
	if n.pump != nil {
		ps := n.pump.Stats()
		p.Published, p.PublishErrors = ps.Published, ps.Failures
		p.PumpRetrying, p.PumpLastError = ps.Retrying, ps.LastError
	}
	n.mu.Lock()
	if n.pumpErr != nil {
		p.PumpError = n.pumpErr.Error()
	}
	n.mu.Unlock()
	s.Process = p
	return s, nil
}

// Health returns the reasons the node is unhealthy: halted at an event,
// behind the feed's retention, a feed whose head is below the cursor, reads
// of the feed failing for longer than FeedErrorGrace, a pump retrying a
// failed publish, or a pump that stopped. None means healthy.
func (s *Status) Health() []string {
	var reasons []string
	if s.Halted != nil {
		reasons = append(reasons, fmt.Sprintf("applier halted at event %s (control_version %d, type %s): %s",
			s.Halted.EventID, s.Halted.ControlVersion, s.Halted.Type, s.Halted.Error))
	}
	if s.BehindRetention != "" {
		reasons = append(reasons, s.BehindRetention)
	}
	if s.FeedBehindCursor != "" {
		reasons = append(reasons, s.FeedBehindCursor)
	}
	if p := s.Process; p != nil && p.FeedErrorSince != nil && time.Since(*p.FeedErrorSince) > FeedErrorGrace {
		reasons = append(reasons, fmt.Sprintf("cannot read the feed since %s: %s", p.FeedErrorSince.Format(time.RFC3339), p.FeedError))
	}
	if p := s.Process; p != nil && p.PumpError != "" {
		reasons = append(reasons, "pump stopped: "+p.PumpError)
	} else if p != nil && p.PumpRetrying {
		reasons = append(reasons, "pump retrying after: "+p.PumpLastError)
	}
	return reasons
}

// Handler serves the node's HTTP API:
//
//	GET /healthz    200 "ok", or 503 with one reason per line
//	GET /v1/status  Status as JSON
//	GET /metrics    Prometheus text format
func (n *Node) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", n.serveHealth)
	mux.HandleFunc("GET /v1/status", n.serveStatus)
	mux.HandleFunc("GET /metrics", n.serveMetrics)
	return mux
}

func (n *Node) serveHealth(w http.ResponseWriter, r *http.Request) {
	s, err := n.Status(r.Context())
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, err)
		return
	}
	if reasons := s.Health(); len(reasons) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, strings.Join(reasons, "\n"))
		return
	}
	fmt.Fprintln(w, "ok")
}

func (n *Node) serveStatus(w http.ResponseWriter, r *http.Request) {
	s, err := n.Status(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(s)
}

func (n *Node) serveMetrics(w http.ResponseWriter, r *http.Request) {
	s, err := n.Status(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", metrics.ContentType)
	WriteMetrics(metrics.NewWriter(w), &s)
}

// WriteMetrics writes s as Prometheus metrics. Lag is omitted when the head
// is unknown; process counters are 0 when s has no Process.
func WriteMetrics(m *metrics.Writer, s *Status) error {
	p := s.Process
	if p == nil {
		p = &ProcessStatus{}
	}
	m.Gauge("controlfeed_cursor", "Highest ControlVersion this node has applied or moved past.", float64(s.Cursor))
	if s.Lag != nil {
		m.Gauge("controlfeed_lag", "Events in the feed after this node's cursor.", float64(*s.Lag))
	}
	m.Gauge("controlfeed_outbox_pending", "Outbox rows not yet published.", float64(s.OutboxPending))
	m.Gauge("controlfeed_outbox_dead", "Outbox rows that can never be published.", float64(s.OutboxDead))
	m.Counter("controlfeed_published_total", "Events this process's pump published.", float64(p.Published))
	m.Counter("controlfeed_publish_errors_total", "Failed publish attempts of this process's pump.", float64(p.PublishErrors))
	m.Counter("controlfeed_applied_total", "Events this process's applier applied.", float64(p.Applied))
	halted := 0.0
	if s.Halted != nil {
		halted = 1
	}
	m.Gauge("controlfeed_conflicts", "Conflicting duplicates detected: an applied event id delivered again with different content.", float64(s.Conflicts))
	m.Gauge("controlfeed_halted", "1 when the applier is halted at an event that fails to apply.", halted)
	behind := 0.0
	if s.BehindRetention != "" {
		behind = 1
	}
	m.Gauge("controlfeed_behind_retention", "1 when the node's cursor is older than the feed's retention.", behind)
	feedBehind := 0.0
	if s.FeedBehindCursor != "" {
		feedBehind = 1
	}
	m.Gauge("controlfeed_feed_behind_cursor", "1 when the feed's head is below the node's cursor (the feed was recreated or lost events).", feedBehind)
	feedFailing := 0.0
	if p.FeedError != "" {
		feedFailing = 1
	}
	m.Gauge("controlfeed_feed_read_failing", "1 while the applier's reads of the feed fail (see feed_error in /v1/status).", feedFailing)
	return m.Err()
}
