package fleet

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// State is a node's state in the fleet view.
type State string

// The states of a Row, in the order a reader should worry about them.
const (
	// StateStale: the node's last report is older than the stale
	// threshold (it stopped, is partitioned, or cannot write reports).
	// Its other fields are as of that report.
	StateStale State = "stale"
	// StateHalted: the node cannot apply an event (Row.Halted).
	StateHalted State = "halted"
	// StateUnavailable: the node's feed, artifact store or database
	// cannot serve it, or the feed has a gap or lost what the node needs
	// (Row.Unavailable, Row.Problem); it retries by itself.
	StateUnavailable State = "unavailable"
	// StateLagging: behind the head, and the oldest event it has not
	// applied is older than the lagging threshold.
	StateLagging State = "lagging"
	// StateApplying: behind the head, catching up within the lagging
	// threshold (or the event times are unknown).
	StateApplying State = "applying"
	// StateSynced: at the head.
	StateSynced State = "synced"
)

// Defaults of ViewConfig.
const (
	DefaultStaleAfter   = 30 * time.Second
	DefaultLaggingAfter = 10 * time.Second
)

// ViewConfig is what View needs besides the reports.
type ViewConfig struct {
	// Now is the reader's time (zero = time.Now()).
	Now time.Time
	// StaleAfter is the report age over which a node is stale
	// (DefaultStaleAfter).
	StaleAfter time.Duration
	// LaggingAfter is the age of a node's oldest unapplied event over
	// which it is lagging rather than applying (DefaultLaggingAfter).
	LaggingAfter time.Duration
	// Head is the feed's newest ControlVersion as the reader read it, 0 if
	// unknown; View uses the highest of it and every position the reports
	// name.
	Head uint64
	// EventTime, if set, returns when the first event after cursor was
	// created (its created_at), for the lag in seconds; ok false when
	// unknown.
	EventTime func(cursor uint64) (t time.Time, ok bool)
}

// Row is one node in the fleet view, as "controlfeed fleet --json" prints
// it.
type Row struct {
	Node  string `json:"node"`
	State State  `json:"state"`
	// Cursor is the node's cursor as of its last report.
	Cursor uint64 `json:"cursor"`
	// LagEvents is Head - Cursor; LagSeconds the age of the oldest event
	// the node has not applied (null when unknown, 0 when synced).
	LagEvents  uint64   `json:"lag_events"`
	LagSeconds *float64 `json:"lag_seconds"`
	// ReportAgeSeconds is how long ago the store received the last
	// report; SeenAt when.
	ReportAgeSeconds float64   `json:"report_age_seconds"`
	SeenAt           time.Time `json:"seen_at"`
	// Digest is the node's agreement with the others.
	Digest Agreement `json:"digest"`
	// Halted, Unavailable and Problem are the report's.
	Halted      *Halt        `json:"halted"`
	Unavailable *Unavailable `json:"unavailable"`
	Problem     string       `json:"problem,omitempty"`
	Applied     int64        `json:"applied"`
	Skipped     int64        `json:"skipped"`
	Version     string       `json:"version,omitempty"`
	StartedAt   time.Time    `json:"started_at"`
	// Report is the full report the row is derived from.
	Report Report `json:"-"`
}

// Agreement values of Agreement.Status.
const (
	AgreementAgrees        = "agrees"
	AgreementDiffers       = "differs"
	AgreementNoCommonPoint = "no common point"
	AgreementAlone         = "alone"
)

// Agreement compares one node's digests with every other node's.
//
// Two nodes are compared at the highest cursor at which both hold a state
// digest (their current ones and their checkpoints, which every node keeps
// at the same positions), and by their application digests when those
// were taken at the same cursor. A pair differs if either comparison
// differs. A pair that agrees counts fully only if the comparison covered
// the application digests whenever both nodes have one: two nodes whose
// event histories agree but whose tables were digested at different
// cursors say nothing about a local edit of either table.
//
// A node "differs" when more nodes differ from it than fully agree with
// it: of three nodes at the same cursor, the one whose table was edited
// differs (vs 2 nodes) and the two others agree; of two that differ, both
// do (nothing tells which is right). It "agrees" otherwise, "no common
// point" when it could be compared with no node, "alone" when it is the
// only node.
type Agreement struct {
	Status string `json:"status"`
	// Agrees and Differs count the nodes that agree and differ with
	// this one (Agrees includes partial agreements).
	Agrees  int `json:"agrees"`
	Differs int `json:"differs"`
	// DiffersFrom names the nodes that differ, at most MaxNamed.
	DiffersFrom []string `json:"differs_from,omitempty"`
	// Details say where the differences are, e.g. "state digest at
	// cursor 101 differs from node-b", at most MaxNamed.
	Details []string `json:"details,omitempty"`
}

// MaxNamed bounds the names and details of an Agreement, so the view of a
// large fleet that disagrees with one node stays small.
const MaxNamed = 16

// String is the table's wording: "agrees", "DIFFERS (vs N nodes)", "no
// common point" or "alone".
func (a Agreement) String() string {
	if a.Status == AgreementDiffers {
		n := a.Differs
		return fmt.Sprintf("DIFFERS (vs %d node%s)", n, plural(n))
	}
	return a.Status
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// View derives the fleet view from the stored reports: one Row per entry,
// sorted by node name.
func View(entries []Entry, cfg ViewConfig) []Row {
	now := cmp.Or(cfg.Now, time.Now())
	if cfg.Now.IsZero() {
		now = time.Now()
	}
	stale := cmp.Or(cfg.StaleAfter, DefaultStaleAfter)
	lagging := cmp.Or(cfg.LaggingAfter, DefaultLaggingAfter)
	head := cfg.Head
	for _, e := range entries {
		head = max(head, e.Report.Cursor)
		if e.Report.Head != nil {
			head = max(head, *e.Report.Head)
		}
	}
	rows := make([]Row, 0, len(entries))
	for _, e := range entries {
		r := e.Report
		row := Row{Node: r.Node, Cursor: r.Cursor, LagEvents: head - r.Cursor,
			ReportAgeSeconds: max(0, now.Sub(e.SeenAt).Seconds()), SeenAt: e.SeenAt,
			Halted: r.Halted, Unavailable: r.Unavailable, Problem: r.Problem,
			Applied: r.Applied, Skipped: r.Skipped, Version: r.Version, StartedAt: r.StartedAt, Report: r}
		if row.LagEvents == 0 {
			zero := 0.0
			row.LagSeconds = &zero
		} else if cfg.EventTime != nil {
			if t, ok := cfg.EventTime(r.Cursor); ok {
				s := max(0, now.Sub(t).Seconds())
				row.LagSeconds = &s
			}
		}
		switch {
		case now.Sub(e.SeenAt) > stale:
			row.State = StateStale
		case r.Halted != nil:
			row.State = StateHalted
		case r.Unavailable != nil || r.Problem != "":
			row.State = StateUnavailable
		case row.LagEvents == 0:
			row.State = StateSynced
		case row.LagSeconds != nil && *row.LagSeconds > lagging.Seconds():
			row.State = StateLagging
		default:
			row.State = StateApplying
		}
		rows = append(rows, row)
	}
	slices.SortFunc(rows, func(a, b Row) int { return cmp.Compare(a.Node, b.Node) })
	agree(rows)
	return rows
}

// agree fills every row's Agreement. Nodes whose digests are identical
// (state digest, checkpoints, application digest) form one group and are
// compared once, so a fleet mostly at one position costs about as much as
// a few nodes, not n².
func agree(rows []Row) {
	type group struct {
		rep     *Report
		points  []Digest // descending cursors
		members []int
	}
	var groups []*group
	byKey := map[string]*group{}
	of := make([]*group, len(rows))
	for i := range rows {
		r := &rows[i].Report
		key := digestKey(r)
		g := byKey[key]
		if g == nil {
			g = &group{rep: r, points: digestPoints(r)}
			byKey[key] = g
			groups = append(groups, g)
		}
		g.members = append(g.members, i)
		of[i] = g
	}
	type verdict struct {
		comparable, full, equal bool
		detail                  string
	}
	vs := make([]verdict, len(groups))
	for _, gi := range groups {
		for j, gj := range groups {
			if gi == gj {
				vs[j] = verdict{comparable: true, full: true, equal: true}
				continue
			}
			c, f, e, d := comparePair(gi.rep, gj.rep, gi.points, gj.points)
			vs[j] = verdict{c, f, e, d}
		}
		for _, i := range gi.members {
			a := &rows[i].Digest
			if len(rows) == 1 {
				a.Status = AgreementAlone
				continue
			}
			fullAgree := 0
			for j, gj := range groups {
				v := vs[j]
				n := len(gj.members)
				if gj == gi {
					n-- // not itself
				}
				switch {
				case n == 0 || !v.comparable:
				case v.equal:
					a.Agrees += n
					if v.full {
						fullAgree += n
					}
				default:
					a.Differs += n
					for _, k := range gj.members {
						if len(a.DiffersFrom) == MaxNamed {
							break
						}
						a.DiffersFrom = append(a.DiffersFrom, rows[k].Node)
						a.Details = append(a.Details, v.detail+" differs from "+rows[k].Node)
					}
				}
			}
			switch {
			case a.Agrees+a.Differs == 0:
				a.Status = AgreementNoCommonPoint
			case a.Differs > fullAgree:
				a.Status = AgreementDiffers
			default:
				a.Status = AgreementAgrees
			}
		}
	}
}

// digestPoints returns a report's state digests by descending cursor,
// one per cursor.
func digestPoints(r *Report) []Digest {
	ps := append([]Digest{r.StateDigest}, r.DigestCheckpoints...)
	slices.SortFunc(ps, func(a, b Digest) int { return cmp.Compare(b.Cursor, a.Cursor) })
	return slices.CompactFunc(ps, func(a, b Digest) bool { return a.Cursor == b.Cursor })
}

// digestKey identifies a report's digests.
func digestKey(r *Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d=%s", r.StateDigest.Cursor, r.StateDigest.Digest)
	for _, c := range r.DigestCheckpoints {
		fmt.Fprintf(&b, ",%d=%s", c.Cursor, c.Digest)
	}
	if a := r.AppDigest; a != nil {
		fmt.Fprintf(&b, ";%d=%s", a.Cursor, a.Digest)
	}
	return b.String()
}

// comparePair compares two reports' digests (see Agreement). full is
// false when both have an application digest but they could not be
// compared; detail names the first difference.
func comparePair(a, b *Report, pa, pb []Digest) (comparable, full, equal bool, detail string) {
	equal, full = true, true
	// The highest cursor in both (pa and pb descend).
	for i, j := 0, 0; i < len(pa) && j < len(pb); {
		switch {
		case pa[i].Cursor > pb[j].Cursor:
			i++
		case pa[i].Cursor < pb[j].Cursor:
			j++
		default:
			if pa[i].Cursor > 0 {
				comparable = true
				if pa[i].Digest != pb[j].Digest {
					equal = false
					detail = fmt.Sprintf("state digest at cursor %d", pa[i].Cursor)
				}
			}
			i = len(pa)
		}
	}
	if a.AppDigest != nil && b.AppDigest != nil {
		full = a.AppDigest.Cursor == b.AppDigest.Cursor
		if full {
			comparable = true
			if a.AppDigest.Digest != b.AppDigest.Digest && equal {
				equal = false
				detail = fmt.Sprintf("application digest at cursor %d", a.AppDigest.Cursor)
			}
		}
	}
	return comparable, full, equal, detail
}

// Outcomes of an event on a node (EventOutcome).
const (
	OutcomeApplied    = "applied"
	OutcomeSkipped    = "skipped"
	OutcomeHaltedHere = "halted here"
	OutcomeNotYet     = "not yet"
)

// EventOutcome says what happened to the event eventID at controlVersion
// on the node of row, with a reason for "not yet" and "halted here".
//
// Limits: a report carries the node's cursor, its halt and its newest
// skipped events (MaxRecentSkipped), not its whole history. An event at or
// below the cursor is therefore "applied" unless it is among the skipped
// events the report lists: an event skipped before the newest
// MaxRecentSkipped skips shows as applied, and so does an event a node
// never applied itself because it was restored from a snapshot taken after
// it (the snapshot holds its effect). A node's own database
// (controlfeed_applied_events) is the authority.
func EventOutcome(row Row, eventID string, controlVersion uint64) (outcome, reason string) {
	r := &row.Report
	if h := r.Halted; h != nil && (h.EventID == eventID || h.ControlVersion == controlVersion) {
		return OutcomeHaltedHere, h.Error
	}
	if r.Cursor >= controlVersion {
		for _, s := range r.RecentSkipped {
			if s.EventID == eventID || s.ControlVersion == controlVersion {
				return OutcomeSkipped, ""
			}
		}
		return OutcomeApplied, ""
	}
	return OutcomeNotYet, NotYetReason(row)
}

// NotYetReason explains why the node of row has not reached a later event:
// its state and what it is stuck on.
func NotYetReason(row Row) string {
	switch row.State {
	case StateStale:
		return fmt.Sprintf("stale: no report for %.0fs (at cursor %d then)", row.ReportAgeSeconds, row.Cursor)
	case StateHalted:
		h := row.Halted
		return fmt.Sprintf("halted at event %s (control_version %d): %s", h.EventID, h.ControlVersion, h.Error)
	case StateUnavailable:
		if u := row.Unavailable; u != nil {
			return fmt.Sprintf("unavailable (%s): %s", u.Op, u.Error)
		}
		return "unavailable: " + row.Problem
	}
	return fmt.Sprintf("%s: at cursor %d, %d events behind", row.State, row.Cursor, row.LagEvents)
}
