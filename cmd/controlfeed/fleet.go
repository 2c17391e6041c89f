package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/feed/nop"
	"github.com/controlfeed/controlfeed/fleet"
)

// fleetFeedSettings are the flags locating a fleet's reports and feed.
var fleetFeedSettings = settingList([]string{"feed-source", "feed-dir"}, natsSettings, []string{"nats-stream", "nats-subject"})

const fleetStatesHelp = `State is one of: synced (at the feed's head), applying (behind the head,
its oldest unapplied event younger than --lagging-after), lagging (behind,
older), halted (an event cannot be applied: the event and its error are
shown), unavailable (its feed, artifact store or database failing, or a gap
in the feed; it retries by itself), stale (no report for --stale-after: the
node stopped, is cut off, or cannot write reports; its other columns are as
of its last report).

Nodes write their reports themselves (serve --fleet-heartbeat): on the file
feed into FEED_DIR/.nodes/NODE.json, on jetstream into the key/value bucket
<stream>_NODES (created by the producer). The head and the event times come
from the feed itself, read without touching any node's consumer.`

var fleetCmd = &command{
	name:    "fleet",
	summary: "show every node of the fleet: state, cursor, lag, digest agreement, halt",
	details: `Reads the fleet's node reports and the feed's head and prints one row per
node: NODE, STATE, CURSOR, LAG (events behind the head), LAG_S (age in
seconds of the oldest event it has not applied), SEEN (seconds since its
last report), DIGEST and, for a halted or unavailable node, the event and
error. It only reads. The fleet is the nodes' feed: --feed-dir alone means
the file feed, --nats-url (or its variable) alone means jetstream.

DIGEST compares the node's state digest with every other node's at the
highest position both recorded (every node keeps checkpoints at the same
positions), and its application digest (kv: its table) with those taken at
the same cursor: "agrees", "DIFFERS (vs N nodes)" when it differs from at
least half of the nodes it can be compared with (a node whose table was
edited locally, or that skipped an event the others applied), "no common
point", or "alone".

` + fleetStatesHelp + `

Subcommands: fleet event EVENT_ID, fleet wait, fleet forget NODE (see their
--help). With --json it prints {"head", "read_at", "stale_after",
"nodes": [...]} where each node has node, state, cursor, lag_events,
lag_seconds (null if unknown), report_age_seconds, seen_at, digest
{status, agrees_with, differs_from, details}, halted, unavailable, problem,
applied, skipped, version, started_at. The exit status is 0 whatever the
states.`,
	example:  `controlfeed fleet --feed-dir /var/lib/cf/feed`,
	settings: settingList(fleetFeedSettings, []string{"stale-after", "lagging-after", "json", "log-format", "log-level"}),
}

var fleetEventCmd = &command{
	name:    "fleet event",
	args:    "EVENT_ID",
	summary: "show, per node, whether an event is applied, skipped, halted there or not yet",
	details: `Finds the event EVENT_ID in the feed (searching back from the head through
the newest 100000 events; give --cv N to name its position instead) and
prints, per node: applied, skipped, halted here (with the error) or not yet
(with why: lagging, halted at another event, unavailable, stale).

Limits: a node's report carries its cursor, its halt and its newest 64
skipped events, not its history. An event at or below a node's cursor shows
as applied unless the node's report lists it as skipped, so an event
skipped before the node's 64 newest skips, or one a node never applied
because it was restored from a later snapshot (which holds its effect),
shows as applied. The node's own "controlfeed status" and database are the
authority. With --json: {"event_id", "control_version", "nodes":
[{"node", "outcome", "reason", "state"}]}.`,
	example:  `controlfeed fleet event 0193a5d2-7c4e-7b1a-9d8e-3f2b1c0a9e8d --feed-dir /var/lib/cf/feed`,
	settings: settingList(fleetFeedSettings, []string{"cv", "stale-after", "lagging-after", "json", "log-format", "log-level"}),
}

var fleetWaitCmd = &command{
	name:    "fleet wait",
	summary: "wait until an event is applied on the fleet (for deploy pipelines)",
	details: `Blocks until the event --event ID (or the event at --cv N) is applied on
every live node (or on --nodes K of them), then exits 0. After --timeout it
exits 1 naming every node that has not applied it and why (halted at it,
with the error; lagging; unavailable), and the stale nodes it left out. A
node that skipped the event counts as not applied, for good: wait fails at
once naming it.

Stale nodes (no report for --stale-after) are left out unless
--include-stale. Wait reads the reports every --poll-interval (default
500ms), so it notices an application up to a second (the nodes' report
debounce) after it committed.

` + fleetStatesHelp,
	example:  `controlfeed fleet wait --event 0193a5d2-7c4e-7b1a-9d8e-3f2b1c0a9e8d --timeout 2m --feed-dir /var/lib/cf/feed`,
	settings: settingList(fleetFeedSettings, []string{"event", "cv", "nodes", "timeout", "include-stale", "stale-after", "poll-interval", "log-format", "log-level"}),
	override: map[string]flagHelp{
		"nodes":         {usage: "wait for `K` nodes to have applied the event (default: every live node)", show: "every live node"},
		"poll-interval": {usage: "how often to read the reports (`DURATION`)", show: "500ms"},
	},
}

var fleetForgetCmd = &command{
	name:    "fleet forget",
	args:    "NODE",
	summary: "remove a decommissioned node's report (and its durable consumer on jetstream)",
	details: `Removes the report of the node NODE, so it no longer shows in "fleet" or
counts for "fleet wait", and on jetstream also deletes its durable consumer
on the feed stream, so the stream stops keeping its place. A node that is
not stale (it reported within --stale-after) is refused unless --force: it
would write its report again at its next heartbeat, and on jetstream a
running node recreates its consumer where the stream's retention allows.
Stop the node first.`,
	example:  `controlfeed fleet forget edge-17 --feed-source jetstream --nats-url nats://10.0.0.5:4222`,
	settings: settingList(fleetFeedSettings, []string{"stale-after", "force", "log-format", "log-level"}),
	override: map[string]flagHelp{
		"force": {usage: "forget the node even though it reported within --stale-after", show: "false"},
	},
}

func (m *Main) runFleet(ctx context.Context, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "event":
			return m.runFleetEvent(ctx, args[1:])
		case "wait":
			return m.runFleetWait(ctx, args[1:])
		case "forget":
			return m.runFleetForget(ctx, args[1:])
		}
	}
	var s settings
	pos, err := fleetCmd.parse(m, &s, args)
	if err != nil {
		return helpOK(err)
	}
	if len(pos) > 0 {
		return usageErrorf("controlfeed fleet: unknown subcommand %q: want event, wait or forget (or no argument for the table)", pos[0])
	}
	f, err := m.openFleet(ctx, fleetCmd, &s)
	if err != nil {
		return err
	}
	defer f.close()
	v, err := f.view(ctx)
	if err != nil {
		return err
	}
	if s.JSON {
		return writeJSON(m, v)
	}
	return m.printFleet(v)
}

// fleetReader reads a fleet's reports and its feed.
type fleetReader struct {
	cmd   *command
	s     *settings
	store fleet.Store
	src   feed.Source // read-only; nil if it could not be opened
	log   *slog.Logger
}

// fleetView is what "fleet --json" prints.
type fleetView struct {
	Head       uint64      `json:"head"`
	ReadAt     time.Time   `json:"read_at"`
	StaleAfter string      `json:"stale_after"`
	Nodes      []fleet.Row `json:"nodes"`
	// Errors are reports that could not be read (the other nodes are
	// shown).
	Errors []string `json:"errors,omitempty"`
}

func (m *Main) openFleet(ctx context.Context, cmd *command, s *settings) (*fleetReader, error) {
	log, err := s.logger(m.Stderr)
	if err != nil {
		return nil, err
	}
	s.defaultReadFeed()
	if s.FeedSource == nop.Name || s.FeedSource == "" {
		return nil, usageErrorf("controlfeed %s: --feed-source %s has no fleet: give the nodes' --feed-source (file with --feed-dir, or jetstream with --nats-url) (or %s)\n%s",
			cmd.name, cmp.Or(s.FeedSource, nop.Name), cmd.envName("feed-source"), cmd.usageLine())
	}
	if err := s.checkBackends(cmd); err != nil {
		return nil, err
	}
	if s.StaleAfter <= 0 {
		return nil, usageErrorf("controlfeed %s: --stale-after %v: want a positive duration", cmd.name, s.StaleAfter)
	}
	s.logDefaultNATSURL(cmd, log)
	st, err := fleet.Open(ctx, s.FeedSource, fleet.Config{Feed: s.feedConfig(), Logger: log})
	if err != nil && brokerUnavailable(err) {
		return nil, fmt.Errorf("controlfeed %s: %w; check --nats-url (or %s) and that the broker runs", cmd.name, err, cmd.envName("nats-url"))
	}
	if err != nil {
		return nil, s.natsTimeoutHint(cmd, fmt.Errorf("controlfeed %s: %w", cmd.name, err))
	}
	f := &fleetReader{cmd: cmd, s: s, store: st, log: log}
	cfg := s.feedConfig()
	cfg.NATS.NodeName = "" // jetstream: an ephemeral, read-only consumer
	if src, err := feed.Open(s.FeedSource, cfg); err != nil {
		log.Warn("cannot read the feed: lag in seconds and the feed's head are unknown", "err", err)
	} else {
		f.src = src
	}
	return f, nil
}

func (f *fleetReader) close() {
	closeQuietly(f.store)
	if f.src != nil {
		closeQuietly(f.src)
	}
}

// list reads the reports. A missing jetstream bucket is an empty fleet.
func (f *fleetReader) list(ctx context.Context) ([]fleet.Entry, []string, error) {
	es, err := f.store.List(ctx)
	if errors.Is(err, fleet.ErrNoStore) {
		return nil, nil, nil
	}
	if err != nil && len(es) == 0 {
		return nil, nil, f.s.natsTimeoutHint(f.cmd, fmt.Errorf("controlfeed %s: read the node reports: %w", f.cmd.name, err))
	}
	var bad []string
	if err != nil {
		bad = strings.Split(err.Error(), "\n")
	}
	return es, bad, nil
}

// maxEventTimes bounds the distinct cursors whose next event view reads
// for the lag in seconds.
const maxEventTimes = 64

func (f *fleetReader) view(ctx context.Context) (fleetView, error) {
	es, bad, err := f.list(ctx)
	if err != nil {
		return fleetView{}, err
	}
	v := fleetView{ReadAt: time.Now().UTC(), StaleAfter: f.s.StaleAfter.String(), Errors: bad}
	var head uint64
	if hr, ok := f.src.(feed.HeadReporter); ok && f.src != nil {
		if h, err := hr.Head(ctx); err == nil {
			head = h
		} else {
			f.log.Warn("cannot read the feed's head; using the highest position the nodes report", "err", err)
		}
	}
	times := map[uint64]*time.Time{}
	v.Nodes = fleet.View(es, fleet.ViewConfig{Now: v.ReadAt, StaleAfter: f.s.StaleAfter, LaggingAfter: f.s.LaggingAfter, Head: head,
		EventTime: func(cursor uint64) (time.Time, bool) {
			t, seen := times[cursor]
			if !seen {
				if len(times) < maxEventTimes {
					t = f.nextEventTime(ctx, cursor)
				}
				times[cursor] = t
			}
			if t == nil {
				return time.Time{}, false
			}
			return *t, true
		}})
	for _, r := range v.Nodes {
		v.Head = max(v.Head, r.Cursor+r.LagEvents)
	}
	v.Head = max(v.Head, head)
	if v.Nodes == nil {
		v.Nodes = []fleet.Row{}
	}
	return v, nil
}

// nextEventTime returns the created_at of the first event after cursor, or
// nil if the feed cannot tell.
func (f *fleetReader) nextEventTime(ctx context.Context, cursor uint64) *time.Time {
	if f.src == nil {
		return nil
	}
	evs, err := f.src.Poll(ctx, cursor)
	if err != nil || len(evs) == 0 || evs[0].CreatedAt.IsZero() {
		return nil
	}
	t := evs[0].CreatedAt
	return &t
}

func (m *Main) printFleet(v fleetView) error {
	tw := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "NODE\tSTATE\tCURSOR\tLAG\tLAG_S\tSEEN\tDIGEST\tHALTED/PROBLEM\n")
	for _, r := range v.Nodes {
		lagS := "?"
		if r.LagSeconds != nil {
			lagS = fmt.Sprintf("%.1f", *r.LagSeconds)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%.0fs\t%s\t%s\n", r.Node, r.State, r.Cursor, r.LagEvents, lagS,
			r.ReportAgeSeconds, r.Digest, rowProblem(r))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(v.Nodes) == 0 {
		fmt.Fprintln(m.Stdout, "(no node has reported yet: nodes report while serve --feed-source runs)")
	}
	fmt.Fprintf(m.Stdout, "head %d, %d nodes, stale after %s\n", v.Head, len(v.Nodes), v.StaleAfter)
	for _, e := range v.Errors {
		fmt.Fprintf(m.Stdout, "unreadable report: %s\n", e)
	}
	return nil
}

// rowProblem is the last column of the table: the halt, the
// unavailability or the problem, and the digest's first difference.
func rowProblem(r fleet.Row) string {
	var parts []string
	if h := r.Halted; h != nil {
		sec := ""
		if h.Security != "" {
			sec = "SECURITY HALT (" + oneLine(h.Security) + ") "
		}
		parts = append(parts, fmt.Sprintf("%sevent %s (cv %d): %s", sec, h.EventID, h.ControlVersion, oneLine(h.Error)))
	}
	if u := r.Unavailable; u != nil {
		parts = append(parts, fmt.Sprintf("%s: %s", u.Op, oneLine(u.Error)))
	}
	if r.Problem != "" {
		parts = append(parts, oneLine(r.Problem))
	}
	if r.Digest.Status == fleet.AgreementDiffers && len(r.Digest.Details) > 0 {
		parts = append(parts, r.Digest.Details[0])
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "; ")
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

func writeJSON(m *Main, v any) error {
	enc := json.NewEncoder(m.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// eventSearchLimit bounds how far back from the head fleet event and fleet
// wait look for an event by ID.
const eventSearchLimit = 100000

// findEvent returns the ControlVersion of the event id: from the reports
// (a node halted at it or that skipped it), else searching the feed back
// from the head.
func (f *fleetReader) findEvent(ctx context.Context, id string, es []fleet.Entry) (uint64, error) {
	for _, e := range es {
		if h := e.Report.Halted; h != nil && h.EventID == id {
			return h.ControlVersion, nil
		}
		for _, sk := range e.Report.RecentSkipped {
			if sk.EventID == id {
				return sk.ControlVersion, nil
			}
		}
	}
	if f.src == nil {
		return 0, fmt.Errorf("controlfeed %s: cannot read the feed to find event %q: give its position with --cv N", f.cmd.name, id)
	}
	var head uint64
	if hr, ok := f.src.(feed.HeadReporter); ok {
		h, err := hr.Head(ctx)
		if err != nil {
			return 0, f.s.natsTimeoutHint(f.cmd, fmt.Errorf("controlfeed %s: read the feed's head: %w", f.cmd.name, err))
		}
		head = h
	} else {
		for _, e := range es {
			head = max(head, e.Report.Cursor)
		}
		head = max(head, 1) + eventSearchLimit // a feed without a head: search forward from below
	}
	const window = 1000
	for hi := head; hi > 0 && head-hi < eventSearchLimit; {
		lo := hi - min(hi, window)
		cursor := lo
		for cursor < hi {
			evs, err := f.src.Poll(ctx, cursor)
			var ie *feed.InvalidEventError
			if errors.As(err, &ie) && ie.ControlVersion > cursor {
				cursor = ie.ControlVersion
				continue
			}
			if errors.Is(err, feed.ErrCursorBehindRetention) {
				hi = 0
				break
			}
			if err != nil {
				return 0, f.s.natsTimeoutHint(f.cmd, fmt.Errorf("controlfeed %s: search the feed for event %q: %w", f.cmd.name, id, err))
			}
			if len(evs) == 0 {
				break
			}
			for _, e := range evs {
				if e.ControlVersion > hi {
					break
				}
				if e.EventID == id {
					return e.ControlVersion, nil
				}
			}
			cursor = evs[len(evs)-1].ControlVersion
		}
		hi = lo
	}
	return 0, fmt.Errorf("controlfeed %s: event %q is not among the feed's newest %d events (a typo, not published yet, or pruned): give its position with --cv N", f.cmd.name, id, eventSearchLimit)
}

// eventAt returns the event at position cv, if the feed holds it.
func (f *fleetReader) eventAt(ctx context.Context, cv uint64) (controlevent.Event, bool) {
	if f.src == nil || cv == 0 {
		return controlevent.Event{}, false
	}
	evs, err := f.src.Poll(ctx, cv-1)
	if err != nil || len(evs) == 0 || evs[0].ControlVersion != cv {
		return controlevent.Event{}, false
	}
	return evs[0], true
}

// target resolves --event / --cv (or the positional EVENT_ID) to an event
// ID (possibly empty) and its ControlVersion.
func (f *fleetReader) target(ctx context.Context, id string, cv uint64, es []fleet.Entry) (string, uint64, error) {
	if cv == 0 {
		var err error
		if cv, err = f.findEvent(ctx, id, es); err != nil {
			return "", 0, err
		}
		return id, cv, nil
	}
	if ev, ok := f.eventAt(ctx, cv); ok {
		if id != "" && ev.EventID != id {
			return "", 0, usageErrorf("controlfeed %s: the event at --cv %d is %q, not %q", f.cmd.name, cv, ev.EventID, id)
		}
		id = ev.EventID
	}
	return id, cv, nil
}

// eventRow is one node in "fleet event --json".
type eventRow struct {
	Node    string      `json:"node"`
	Outcome string      `json:"outcome"`
	Reason  string      `json:"reason,omitempty"`
	State   fleet.State `json:"state"`
}

type eventView struct {
	EventID        string     `json:"event_id"`
	ControlVersion uint64     `json:"control_version"`
	Nodes          []eventRow `json:"nodes"`
}

func eventRows(rows []fleet.Row, id string, cv uint64) []eventRow {
	out := make([]eventRow, 0, len(rows))
	for _, r := range rows {
		o, why := fleet.EventOutcome(r, id, cv)
		out = append(out, eventRow{Node: r.Node, Outcome: o, Reason: oneLine(why), State: r.State})
	}
	return out
}

func (m *Main) runFleetEvent(ctx context.Context, args []string) error {
	var s settings
	pos, err := fleetEventCmd.parse(m, &s, args)
	if err != nil {
		return helpOK(err)
	}
	if len(pos) > 1 || len(pos) == 0 && s.CV == 0 {
		return usageErrorf("controlfeed fleet event: want one argument EVENT_ID (or --cv N), got %q\n%s", pos, fleetEventCmd.usageLine())
	}
	id := ""
	if len(pos) == 1 {
		id = pos[0]
	}
	f, err := m.openFleet(ctx, fleetEventCmd, &s)
	if err != nil {
		return err
	}
	defer f.close()
	v, err := f.view(ctx)
	if err != nil {
		return err
	}
	id, cv, err := f.target(ctx, id, s.CV, rowsEntries(v.Nodes))
	if err != nil {
		return err
	}
	ev := eventView{EventID: id, ControlVersion: cv, Nodes: eventRows(v.Nodes, id, cv)}
	if s.JSON {
		return writeJSON(m, ev)
	}
	fmt.Fprintf(m.Stdout, "event %s at control_version %d\n", cmp.Or(id, "?"), cv)
	tw := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "NODE\tOUTCOME\tSTATE\tREASON\n")
	for _, r := range ev.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Node, r.Outcome, r.State, cmp.Or(r.Reason, "-"))
	}
	return tw.Flush()
}

// rowsEntries gives back the entries a view was made of (for findEvent).
func rowsEntries(rows []fleet.Row) []fleet.Entry {
	es := make([]fleet.Entry, len(rows))
	for i, r := range rows {
		es[i] = fleet.Entry{Report: r.Report, SeenAt: r.SeenAt}
	}
	return es
}

func (m *Main) runFleetWait(ctx context.Context, args []string) error {
	var s settings
	pos, err := fleetWaitCmd.parse(m, &s, args)
	if err != nil {
		return helpOK(err)
	}
	if len(pos) > 0 {
		return usageErrorf("controlfeed fleet wait: unexpected argument %q (give the event with --event ID or --cv N)", pos[0])
	}
	if s.Event == "" && s.CV == 0 {
		return usageErrorf("controlfeed fleet wait: give the event to wait for: --event ID or --cv N\n%s", fleetWaitCmd.usageLine())
	}
	if s.Timeout <= 0 {
		return usageErrorf("controlfeed fleet wait: --timeout %v: want a positive duration (wait never waits without a deadline)", s.Timeout)
	}
	want := 0
	if s.set["nodes"] {
		if s.Nodes <= 0 {
			return usageErrorf("controlfeed fleet wait: --nodes %d: want a positive number of nodes", s.Nodes)
		}
		want = s.Nodes
	}
	interval := cmp.Or(s.PollInterval, 500*time.Millisecond)
	f, err := m.openFleet(ctx, fleetWaitCmd, &s)
	if err != nil {
		return err
	}
	defer f.close()
	deadline := time.Now().Add(s.Timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	id, cv := s.Event, s.CV
	resolved := false
	var last waitResult
	for {
		v, err := f.view(ctx)
		if err != nil && ctx.Err() == nil {
			return err
		}
		if err == nil {
			if !resolved {
				if id, cv, err = f.target(ctx, s.Event, s.CV, rowsEntries(v.Nodes)); err == nil {
					resolved = true
				} else if ctx.Err() == nil && !strings.Contains(err.Error(), "is not among") {
					return err
				}
			}
			if resolved {
				last = waitCheck(v.Nodes, id, cv, want, s.IncludeStale)
				if last.done {
					fmt.Fprintf(m.Stdout, "event %s (control_version %d) applied on %d node(s): %s\n", cmp.Or(id, "?"), cv, len(last.applied), strings.Join(last.applied, ", "))
					return nil
				}
				if len(last.skipped) > 0 {
					return fmt.Errorf("controlfeed fleet wait: event %s (control_version %d) was skipped on %s: it will never be applied there",
						cmp.Or(id, "?"), cv, strings.Join(last.skipped, ", "))
				}
			}
		}
		select {
		case <-ctx.Done():
			if !resolved {
				return fmt.Errorf("controlfeed fleet wait: after %v: event %q is not in the feed (or not yet): give its position with --cv N", s.Timeout, s.Event)
			}
			return last.failure(id, cv, s.Timeout, want)
		case <-time.After(interval):
		}
	}
}

// waitResult is one look of fleet wait at the fleet.
type waitResult struct {
	done                    bool
	applied, skipped, stale []string
	pending                 []string // "node: reason"
	live                    int
}

func waitCheck(rows []fleet.Row, id string, cv uint64, want int, includeStale bool) waitResult {
	var w waitResult
	for _, r := range rows {
		if r.State == fleet.StateStale && !includeStale {
			w.stale = append(w.stale, r.Node)
			continue
		}
		w.live++
		switch o, why := fleet.EventOutcome(r, id, cv); o {
		case fleet.OutcomeApplied:
			w.applied = append(w.applied, r.Node)
		case fleet.OutcomeSkipped:
			w.skipped = append(w.skipped, r.Node)
		case fleet.OutcomeHaltedHere:
			w.pending = append(w.pending, fmt.Sprintf("%s: halted at this event: %s", r.Node, oneLine(why)))
		default:
			w.pending = append(w.pending, fmt.Sprintf("%s: %s", r.Node, oneLine(why)))
		}
	}
	if want > 0 {
		w.done = len(w.applied) >= want
	} else {
		w.done = w.live > 0 && len(w.applied) == w.live
	}
	return w
}

func (w waitResult) failure(id string, cv uint64, timeout time.Duration, want int) error {
	var b strings.Builder
	target := "every live node"
	if want > 0 {
		target = fmt.Sprintf("%d node(s)", want)
	}
	fmt.Fprintf(&b, "controlfeed fleet wait: event %s (control_version %d) not applied on %s after %v: applied on %d of %d live node(s)",
		cmp.Or(id, "?"), cv, target, timeout, len(w.applied), w.live)
	if w.live == 0 {
		b.WriteString(" (no live node: none has reported within --stale-after)")
	}
	slices.Sort(w.pending)
	for _, p := range w.pending {
		b.WriteString("\n  not applied: " + p)
	}
	if len(w.stale) > 0 {
		fmt.Fprintf(&b, "\n  left out as stale (--include-stale to wait for them): %s", strings.Join(w.stale, ", "))
	}
	return errors.New(b.String())
}

func (m *Main) runFleetForget(ctx context.Context, args []string) error {
	var s settings
	pos, err := fleetForgetCmd.parse(m, &s, args)
	if err != nil {
		return helpOK(err)
	}
	if len(pos) != 1 {
		return usageErrorf("controlfeed fleet forget: want one argument NODE, got %q\n%s", pos, fleetForgetCmd.usageLine())
	}
	name := pos[0]
	f, err := m.openFleet(ctx, fleetForgetCmd, &s)
	if err != nil {
		return err
	}
	defer f.close()
	e, err := f.store.Get(ctx, name)
	if errors.Is(err, fleet.ErrNotFound) || errors.Is(err, fleet.ErrNoStore) {
		es, _, _ := f.list(ctx)
		known := make([]string, 0, len(es))
		for _, e := range es {
			known = append(known, e.Report.Node)
		}
		return fmt.Errorf("controlfeed fleet forget: unknown node %q: no report in %s; nodes with a report: [%s]", name, f.store.Name(), strings.Join(known, ", "))
	}
	if err != nil {
		return s.natsTimeoutHint(fleetForgetCmd, fmt.Errorf("controlfeed fleet forget: %w", err))
	}
	if age := time.Since(e.SeenAt); age <= s.StaleAfter && !s.Force {
		return fmt.Errorf("controlfeed fleet forget: node %q reported %s ago (within --stale-after %v): it looks alive and would report again; stop it first, or give --force",
			name, age.Round(time.Second), s.StaleAfter)
	}
	if err := f.store.Delete(ctx, name); err != nil {
		return s.natsTimeoutHint(fleetForgetCmd, fmt.Errorf("controlfeed fleet forget: %w", err))
	}
	what := "report removed"
	if fg, ok := f.store.(fleet.Forgetter); ok {
		if err := fg.Forget(ctx, name); err != nil {
			return s.natsTimeoutHint(fleetForgetCmd, fmt.Errorf("controlfeed fleet forget: report removed, but: %w", err))
		}
		if f.store.Name() == natsfeed.Name {
			what += ", durable consumer " + natsfeed.DurableName(name) + " deleted"
		}
	}
	fmt.Fprintf(m.Stdout, "forgot node %s: %s\n", name, what)
	return nil
}

// createFleetStore makes a jetstream producer create (or check) the fleet
// report bucket, as it does the stream, so nodes can report; nodes never
// create it. The file feed needs nothing created.
func (s *settings) createFleetStore(ctx context.Context, log *slog.Logger) error {
	if s.FeedSink != natsfeed.Name {
		return nil
	}
	st, err := fleet.Open(ctx, s.FeedSink, fleet.Config{Feed: s.feedConfig(), Create: true, Logger: log})
	if err != nil {
		return s.natsTimeoutHint(serveCmd, fmt.Errorf("controlfeed serve: fleet report store: %w", err))
	}
	closeQuietly(st)
	return nil
}

// controlfeedVersion is the module version of this binary ("(devel)" for
// a build from a work tree).
func controlfeedVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
