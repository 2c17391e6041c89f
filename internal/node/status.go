package node

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/outbox"
	"github.com/controlfeed/controlfeed/snapshot"
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
	// State is what the applier's latest round ended in (see
	// applier.State): "starting", "applying", "halted", "unavailable",
	// "gap", "behind_retention" or "security_halted". Read from the database alone it is
	// "halted" when a halt is persisted and omitted otherwise: the
	// database cannot tell the other states (unavailability and gaps are
	// never stored; a running node's /v1/status shows them).
	State string `json:"state,omitempty"`
	// DatabaseError is set by a running process whose database could not
	// be read for this status (a PostgreSQL server that is down): the
	// fields read from the database (counts, cursor, outbox) are then as
	// last read, and /healthz reports it. Omitted otherwise.
	DatabaseError string `json:"database_error,omitempty"`
	// Halted is the event the applier is stuck on because it cannot be
	// applied (persisted; an operator may skip it), or null.
	Halted *Halt `json:"halted"`
	// Unavailable is set while the feed, the artifact store or the local
	// database cannot serve the applier: it retries by itself and there
	// is nothing to skip. Omitted otherwise, and always when read from
	// the database alone.
	Unavailable *Unavailable `json:"unavailable,omitempty"`
	// Gap is set while the feed has not delivered a position it still
	// holds: the node applies nothing past its cursor and polls again;
	// nothing to skip. Omitted otherwise, and always when read from the
	// database alone.
	Gap *Gap `json:"gap,omitempty"`
	// BehindRetention explains why the node cannot catch up by replay, or
	// is empty.
	BehindRetention string `json:"behind_retention,omitempty"`
	// FeedBehindCursor explains that the feed's head fell below the node's
	// cursor (the feed was recreated or lost events; re-bootstrap), or is
	// empty. It stays until the process restarts. See
	// applier.Status.FeedBehindCursor.
	FeedBehindCursor string `json:"feed_behind_cursor,omitempty"`

	// StateDigest is the node's running digest of the events it applied
	// and skipped, in order, at the cursor it names (see
	// applier.StateDigest): two nodes at the same cursor that applied the
	// same events show the same digest. DigestCheckpoints are earlier
	// ones, newest first, at positions common to every node (see
	// applier.DigestCheckpointEvery), for comparing nodes at different
	// cursors.
	StateDigest       Digest   `json:"state_digest"`
	DigestCheckpoints []Digest `json:"digest_checkpoints,omitempty"`
	// AppDigest is the application's digest of its own state (kv: its
	// table) at the cursor it names, with when it was taken; it catches
	// local edits the state digest cannot see. Computed by a running node
	// at most every AppDigestInterval (it reads the whole table); omitted
	// when read from the database alone or without Config.AppDigest.
	AppDigest *AppDigest `json:"app_digest,omitempty"`

	// OutboxPending and OutboxDead count the producer's outbox rows.
	OutboxPending int64 `json:"outbox_pending"`
	OutboxDead    int64 `json:"outbox_dead"`
	// OutboxOldestPending is when the oldest pending row was appended.
	OutboxOldestPending *time.Time `json:"outbox_oldest_pending,omitempty"`
	// PumpHolder is, on a PostgreSQL producer database, the session
	// holding the outbox's drainer lock: the one pump that publishes
	// (see outbox.ReadDrainer). Null when none holds it (no serve runs,
	// or a takeover is under way) and always on SQLite, whose one pump
	// is named in its lock file (DB + PumpLockSuffix).
	PumpHolder *PumpHolder `json:"pump_holder,omitempty"`

	// Process holds this process's counters since it started; omitted when
	// read from the database alone.
	Process *ProcessStatus `json:"process,omitempty"`

	// Snapshots is the periodic snapshotter's state (Config.Snapshots):
	// the latest published snapshot, this process's counts, and whether
	// any published snapshot still covers the feed's retention. Omitted
	// without one.
	Snapshots *snapshot.PeriodicStatus `json:"snapshots,omitempty"`
}

// PumpHolder names the pump that publishes a PostgreSQL outbox: its lock
// session's server pid (for pg_terminate_backend), application_name
// ("controlfeed NODE pid PID" for controlfeed serve), client address and
// since when the session exists.
type PumpHolder struct {
	BackendPID      int64     `json:"backend_pid"`
	ApplicationName string    `json:"application_name,omitempty"`
	ClientAddr      string    `json:"client_addr,omitempty"`
	Since           time.Time `json:"since"`
}

// Digest is a digest as of a cursor: it covers every event at a
// ControlVersion up to Cursor.
type Digest struct {
	Cursor uint64 `json:"cursor"`
	Digest string `json:"digest"`
}

// AppDigest is an application digest and when it was computed.
type AppDigest struct {
	Cursor uint64    `json:"cursor"`
	Digest string    `json:"digest"`
	At     time.Time `json:"at"`
}

func digestFrom(d applier.StateDigest) Digest { return Digest{Cursor: d.Cursor, Digest: d.Digest} }

// Halt describes the event the applier is stuck on.
type Halt struct {
	EventID        string    `json:"event_id"`
	ControlVersion uint64    `json:"control_version"`
	Type           string    `json:"type"`
	Error          string    `json:"error"`
	Attempts       int       `json:"attempts"`
	Since          time.Time `json:"since"`
	LastAttempt    time.Time `json:"last_attempt"`
	// Security is set when the event failed signature or chain
	// verification (a security halt, applier.StateSecurityHalted): the
	// reason ("unsigned", "unknown-key", "bad-signature", "chain-gap",
	// "chain-replay", "chain-fork", "malformed-signature"). A plain skip
	// refuses such an event.
	Security string `json:"security,omitempty"`
}

// Unavailable describes infrastructure the applier cannot use: see
// applier.Unavailable. Op is one of "poll", "check_gap", "fetch", "read_db",
// "apply", "commit"; EventID and ControlVersion are omitted for a failed
// read of the feed.
type Unavailable struct {
	Op             string    `json:"op"`
	EventID        string    `json:"event_id,omitempty"`
	ControlVersion uint64    `json:"control_version,omitempty"`
	Error          string    `json:"error"`
	Attempts       int       `json:"attempts"`
	Since          time.Time `json:"since"`
	LastAttempt    time.Time `json:"last_attempt"`
}

// Gap describes a hole in the delivered feed: see applier.Gap. Missing is 0
// when the feed did not say which position it holds.
type Gap struct {
	Cursor      uint64    `json:"cursor"`
	Next        uint64    `json:"next"`
	Missing     uint64    `json:"missing"`
	Error       string    `json:"error"`
	Attempts    int       `json:"attempts"`
	Since       time.Time `json:"since"`
	LastAttempt time.Time `json:"last_attempt"`
}

// ProcessStatus holds the counters of the running pump and applier.
type ProcessStatus struct {
	StartedAt     time.Time  `json:"started_at"`
	Applied       uint64     `json:"applied"`
	Skipped       uint64     `json:"skipped"`
	Duplicates    uint64     `json:"duplicates"`
	Gaps          uint64     `json:"gaps"` // gaps in the feed the applier met
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
	// reads succeed). It is Unavailable when its Op is "poll", kept here
	// for readers of earlier versions.
	FeedError      string     `json:"feed_error,omitempty"`
	FeedErrorSince *time.Time `json:"feed_error_since,omitempty"`

	// PumpWaiting names the publish the pump is blocked on and
	// PumpWaitingSince when it started (see outbox.Stats.Waiting);
	// ApplierWaiting and ApplierWaitingSince the oldest feed or artifact
	// store call of the applier in flight (see applier.Status.Waiting).
	PumpWaiting         string     `json:"pump_waiting,omitempty"`
	PumpWaitingSince    *time.Time `json:"pump_waiting_since,omitempty"`
	ApplierWaiting      string     `json:"applier_waiting,omitempty"`
	ApplierWaitingSince *time.Time `json:"applier_waiting_since,omitempty"`
	// HeadError is the latest failed read of the feed's head, and
	// HeadErrorSince when the reads began to fail (unset once one
	// succeeds): meanwhile head and lag are as last read, maybe stale.
	HeadError      string     `json:"head_error,omitempty"`
	HeadErrorSince *time.Time `json:"head_error_since,omitempty"`
	// LastPublishAt is when the pump's Sink last accepted an event.
	LastPublishAt *time.Time `json:"last_publish_at,omitempty"`
	// StalledSince is set while the feed holds events after the cursor:
	// since when the cursor has not moved (as this process observed it,
	// at its status reads). Unset when the node is caught up.
	StalledSince *time.Time `json:"stalled_since,omitempty"`
	// HasPump is true when this process runs a pump, so the age of its
	// outbox's oldest pending row is its to answer for (unless it stands
	// by).
	HasPump bool `json:"has_pump"`
	// PumpStandby is true while this process's pump waits for the
	// PostgreSQL outbox's drainer lock, which another serve holds: it
	// publishes nothing, and takes over when the holder dies.
	// PumpTakeovers counts the times it took the lock.
	PumpStandby   bool   `json:"pump_standby,omitempty"`
	PumpTakeovers uint64 `json:"pump_takeovers,omitempty"`
}

// DefaultStallThreshold is the StallThreshold when Config.StallThreshold
// is 0.
const DefaultStallThreshold = time.Minute

// Thresholds are the time limits Health applies; zero fields select
// DefaultUnavailableGrace and DefaultStallThreshold.
type Thresholds struct {
	UnavailableGrace time.Duration
	Stall            time.Duration
}

// DefaultUnavailableGrace is how long the applier may be unavailable (a
// broker restart or failover, a file being written in place, a busy
// database) before /healthz reports it, when Config.UnavailableGrace is 0.
const DefaultUnavailableGrace = 5 * time.Second

func haltFrom(h *applier.Halt) *Halt {
	if h == nil {
		return nil
	}
	return &Halt{EventID: h.EventID, ControlVersion: h.ControlVersion, Type: h.Type, Error: h.Error,
		Attempts: h.Attempts, Since: h.Since, LastAttempt: h.LastAttempt, Security: h.Security}
}

// ReadStatus reads what the database alone says about a node: cursor, applied
// and skipped counts, the persisted halt, and the outbox counts. Any process
// may call it while another runs the node.
func ReadStatus(ctx context.Context, db *sql.DB) (Status, error) {
	if outbox.IsPostgres(db) {
		return readProducerStatus(ctx, db)
	}
	st, err := applier.ReadStatus(ctx, db)
	if err != nil {
		return Status{}, fmt.Errorf("node: read status: %w", err)
	}
	oc, err := outbox.ReadCounts(ctx, db)
	if err != nil {
		return Status{}, fmt.Errorf("node: read status: %w", err)
	}
	s := Status{
		State:         stateFromDB(st.Halted),
		Cursor:        st.Cursor,
		Applied:       st.Applied,
		Skipped:       st.Skipped,
		Conflicts:     st.Conflicts,
		Halted:        haltFrom(st.Halted),
		StateDigest:   digestFrom(st.StateDigest),
		OutboxPending: oc.Pending,
		OutboxDead:    oc.Dead,
	}
	for _, c := range st.Checkpoints {
		s.DigestCheckpoints = append(s.DigestCheckpoints, digestFrom(c))
	}
	if !oc.OldestPending.IsZero() {
		t := oc.OldestPending
		s.OutboxOldestPending = &t
	}
	return s, nil
}

// stateFromDB is the only state the database can tell: halted or not
// known.
func stateFromDB(h *applier.Halt) string {
	switch {
	case h != nil && h.Security != "":
		return applier.StateSecurityHalted.String()
	case h != nil:
		return applier.StateHalted.String()
	}
	return ""
}

func unavailableFrom(u *applier.Unavailable) *Unavailable {
	if u == nil {
		return nil
	}
	return &Unavailable{Op: u.Op, EventID: u.EventID, ControlVersion: u.ControlVersion, Error: u.Error,
		Attempts: u.Attempts, Since: u.Since, LastAttempt: u.LastAttempt}
}

func gapFrom(g *applier.Gap) *Gap {
	if g == nil {
		return nil
	}
	return &Gap{Cursor: g.Cursor, Next: g.Next, Missing: g.Missing, Error: g.Error,
		Attempts: g.Attempts, Since: g.Since, LastAttempt: g.LastAttempt}
}

// Status combines ReadStatus with the live state of the running pump and
// applier.
func (n *Node) Status(ctx context.Context) (Status, error) {
	s, err := ReadStatus(ctx, n.db)
	switch {
	case err != nil && ctx.Err() != nil:
		return s, err
	case err != nil:
		// The database cannot be read (a PostgreSQL server that is down):
		// the process still describes itself, with the database's part
		// as last read, so /v1/status and /metrics keep answering and
		// /healthz names the cause.
		n.mu.Lock()
		s = n.lastDBStatus
		n.mu.Unlock()
		s.DatabaseError = err.Error()
	default:
		n.mu.Lock()
		n.lastDBStatus = s
		n.mu.Unlock()
	}
	s.Node = n.cfg.NodeName
	s.FeedSource, s.FeedSink = n.cfg.FeedSource, n.cfg.FeedSink
	s.AppDigest = n.appDigest(ctx)
	if n.snaps != nil {
		st := n.snaps.Status()
		s.Snapshots = &st
	}
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
		s.State = as.State.String()
		s.Halted = haltFrom(as.Halted)
		s.Unavailable = unavailableFrom(as.Unavailable)
		s.Gap = gapFrom(as.Gap)
		if as.BehindRetention != nil {
			s.BehindRetention = as.BehindRetention.Error()
			if a := n.cfg.BehindRetentionAdvice; a != "" {
				s.BehindRetention += "; " + a
			}
		}
		s.FeedBehindCursor = as.FeedBehindCursor
		p.Applied, p.Skipped, p.Duplicates, p.Gaps = as.Applied, as.Skipped, as.Duplicates, as.Gaps
		if u := as.Unavailable; u != nil && u.Op == applier.OpPoll {
			t := u.Since
			p.FeedError, p.FeedErrorSince = u.Error, &t
		}
		if !as.LastApplyAt.IsZero() {
			t := as.LastApplyAt
			p.LastApplyAt = &t
		}
		p.ApplierWaiting, p.ApplierWaitingSince = as.Waiting, timePtr(as.WaitingSince)
		p.HeadError, p.HeadErrorSince = as.HeadError, timePtr(as.HeadErrorSince)
		p.StalledSince = n.trackProgress(s.Cursor, s.Lag)
	}
	if n.pump != nil {
		ps := n.pump.Stats()
		p.HasPump = true
		p.Published, p.PublishErrors = ps.Published, ps.Failures
		p.PumpRetrying, p.PumpLastError = ps.Retrying, ps.LastError
		p.PumpWaiting, p.PumpWaitingSince = ps.Waiting, timePtr(ps.WaitingSince)
		p.LastPublishAt = timePtr(ps.LastPublishAt)
		p.PumpStandby, p.PumpTakeovers = ps.Standby, ps.Takeovers
	}
	n.mu.Lock()
	if n.pumpErr != nil {
		p.PumpError = n.pumpErr.Error()
	}
	n.mu.Unlock()
	s.Process = p
	return s, nil
}

// timePtr returns &t, or nil for the zero time.
func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// trackProgress returns since when the cursor has stayed at cursor while
// the feed holds events after it, or nil when it is caught up (or the lag
// is unknown). It observes at each status read, so it starts counting at
// the first read that saw the node behind.
func (n *Node) trackProgress(cursor uint64, lag *uint64) *time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	if lag == nil || *lag == 0 {
		n.behind.since = time.Time{}
		return nil
	}
	if n.behind.since.IsZero() || n.behind.cursor != cursor {
		n.behind.cursor, n.behind.since = cursor, time.Now()
	}
	t := n.behind.since
	return &t
}

// Health returns the reasons the node is unhealthy: halted at an event, the
// applier unavailable for longer than t.UnavailableGrace, a gap in the feed
// (at once: a gap is never normal), behind the feed's retention, a feed
// whose head is below the cursor, a pump retrying a failed publish or
// stopped, and no progress for longer than t.Stall: a publish or a feed or
// store call in flight, a pending outbox row not published (when this
// process runs the pump), or a cursor that has not moved while the feed
// holds events after it; and reads of the feed's head failing for longer
// than t.Stall (the lag shown is then as last read). None means healthy. Each state has its own
// wording, so an alert tells an event to fix or skip from infrastructure to
// repair.
func (s *Status) Health(t Thresholds) []string {
	unavailableGrace := cmp.Or(t.UnavailableGrace, DefaultUnavailableGrace)
	stall := cmp.Or(t.Stall, DefaultStallThreshold)
	var reasons []string
	if s.DatabaseError != "" {
		reasons = append(reasons, "the database cannot be read: "+s.DatabaseError)
	}
	switch {
	case s.Halted != nil && s.Halted.Security != "":
		reasons = append(reasons, fmt.Sprintf("SECURITY HALT at event %s (control_version %d, type %s): %s: the event failed verification and was not applied: %s",
			s.Halted.EventID, s.Halted.ControlVersion, s.Halted.Type, s.Halted.Security, s.Halted.Error))
	case s.Halted != nil:
		reasons = append(reasons, fmt.Sprintf("applier halted at event %s (control_version %d, type %s): the event cannot be applied: %s",
			s.Halted.EventID, s.Halted.ControlVersion, s.Halted.Type, s.Halted.Error))
	}
	if u := s.Unavailable; u != nil && time.Since(u.Since) > unavailableGrace {
		at := ""
		if u.EventID != "" {
			at = fmt.Sprintf(" at event %s (control_version %d)", u.EventID, u.ControlVersion)
		}
		reasons = append(reasons, fmt.Sprintf("applier unavailable since %s (%s%s, %d attempts): %s; it retries by itself, there is nothing to skip",
			u.Since.Format(time.RFC3339), u.Op, at, u.Attempts, u.Error))
	}
	if g := s.Gap; g != nil {
		reasons = append(reasons, fmt.Sprintf("gap in the feed since %s: after cursor %d the next event delivered is %d (%d attempts): %s; nothing past the cursor is applied, there is nothing to skip",
			g.Since.Format(time.RFC3339), g.Cursor, g.Next, g.Attempts, g.Error))
	}
	if s.BehindRetention != "" {
		reasons = append(reasons, s.BehindRetention)
	}
	if s.FeedBehindCursor != "" {
		reasons = append(reasons, s.FeedBehindCursor)
	}
	if p := s.Process; p != nil && p.PumpError != "" {
		reasons = append(reasons, "pump stopped: "+p.PumpError)
	} else if p != nil && p.PumpRetrying {
		reasons = append(reasons, "pump retrying after: "+p.PumpLastError)
	}
	return append(reasons, s.stalls(stall)...)
}

// stalls returns the no-progress reasons of Health.
func (s *Status) stalls(stall time.Duration) []string {
	p := s.Process
	if p == nil {
		return nil
	}
	var reasons []string
	old := func(t *time.Time) bool { return t != nil && time.Since(*t) > stall }
	ago := func(t *time.Time) string { return time.Since(*t).Round(time.Second).String() }
	if old(p.PumpWaitingSince) {
		reasons = append(reasons, fmt.Sprintf("pump stuck for %s: %s has not returned (over the %v stall threshold)", ago(p.PumpWaitingSince), p.PumpWaiting, stall))
	}
	if p.HasPump && !p.PumpStandby && s.OutboxPending > 0 && old(s.OutboxOldestPending) {
		reasons = append(reasons, fmt.Sprintf("pump not keeping up: %d outbox rows pending, the oldest appended %s ago (over the %v stall threshold)", s.OutboxPending, ago(s.OutboxOldestPending), stall))
	}
	if old(p.ApplierWaitingSince) {
		reasons = append(reasons, fmt.Sprintf("applier stuck for %s: %s has not returned (over the %v stall threshold)", ago(p.ApplierWaitingSince), p.ApplierWaiting, stall))
	}
	if old(p.HeadErrorSince) {
		// The lag is as last read: a node that stopped progressing while
		// the feed cannot say how far it is (a broker without quorum)
		// must not look caught up.
		reasons = append(reasons, fmt.Sprintf("feed head unknown for %s: reads of the feed's head fail (over the %v stall threshold), so the lag shown may be stale: %s", ago(p.HeadErrorSince), stall, p.HeadError))
	}
	if old(p.StalledSince) && s.Lag != nil {
		reasons = append(reasons, fmt.Sprintf("applier not progressing: the feed holds %d events after cursor %d, which has not moved for %s (over the %v stall threshold)", *s.Lag, s.Cursor, ago(p.StalledSince), stall))
	}
	return reasons
}

// Handler serves the node's HTTP API:
//
//	GET /healthz    200 "ok", or 503 with one reason per line
//	GET /v1/status  Status as JSON
//	GET /metrics    Prometheus exposition (see Registry)
//	GET /           the live console (see package internal/console), with
//	                /v1/console/events and /console/assets/
//
// With Config.ListenToken every path but /healthz requires the token (401
// otherwise), and /healthz gives its reasons only to a request carrying it.
// The console reads the fleet reports and the feed only while someone
// looks at it, at most once a second.
func (n *Node) Handler() http.Handler {
	mux := http.NewServeMux()
	n.consoleOnce.Do(func() { n.console = n.newConsole() })
	n.console.Register(mux, n.requireToken)
	mux.HandleFunc("GET /healthz", n.serveHealth)
	mux.Handle("GET /v1/status", n.requireToken(http.HandlerFunc(n.serveStatus)))
	mux.Handle("GET /metrics", n.requireToken(n.metricsHandler()))
	return mux
}

func (n *Node) serveHealth(w http.ResponseWriter, r *http.Request) {
	s, err := n.Status(r.Context())
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		if !n.authorized(r) {
			fmt.Fprintln(w, "unhealthy (send the listener's bearer token for the reasons)")
			return
		}
		fmt.Fprintln(w, err)
		return
	}
	if reasons := s.Health(Thresholds{UnavailableGrace: n.cfg.UnavailableGrace, Stall: n.cfg.StallThreshold}); len(reasons) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		if !n.authorized(r) {
			fmt.Fprintln(w, "unhealthy (send the listener's bearer token for the reasons)")
			return
		}
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
