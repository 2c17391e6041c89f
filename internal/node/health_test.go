package node

import (
	"strings"
	"testing"
	"time"
)

// An applier that is unavailable briefly (a broker restart) leaves the node
// healthy; unavailable past the grace makes it unhealthy, with a reason
// that says it is no halt. The metrics show it at once.
func TestStatus_HealthUnavailable(t *testing.T) {
	recent := time.Now().Add(-time.Second)
	s := &Status{State: "unavailable", Unavailable: &Unavailable{Op: "fetch", EventID: "evt-7", ControlVersion: 7,
		Error: "natsobject: get: context deadline exceeded", Attempts: 3, Since: recent}}
	if r := s.Health(Thresholds{}); len(r) != 0 {
		t.Fatalf("Health with a fresh unavailability = %q, want healthy within DefaultUnavailableGrace", r)
	}
	if r := s.Health(Thresholds{UnavailableGrace: 500 * time.Millisecond}); len(r) != 1 || !strings.Contains(r[0], "applier unavailable since") ||
		!strings.Contains(r[0], "fetch at event evt-7") || !strings.Contains(r[0], "deadline exceeded") ||
		!strings.Contains(r[0], "nothing to skip") || strings.Contains(r[0], "halted") {
		t.Fatalf("Health past a short grace = %q", r)
	}
	old := time.Now().Add(-2 * DefaultUnavailableGrace)
	s.Unavailable.Since = old
	if r := s.Health(Thresholds{}); len(r) != 1 {
		t.Fatalf("Health past the default grace = %q", r)
	}
	var b strings.Builder
	if err := writeMetrics(&b, s); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\ncontrolfeed_unavailable 1\n", "\ncontrolfeed_halted 0\n", "\ncontrolfeed_gap 0\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, b.String())
		}
	}
	s.State, s.Unavailable = "applying", nil
	if r := s.Health(Thresholds{}); len(r) != 0 {
		t.Fatalf("Health after recovery = %q", r)
	}
}

// A gap makes the node unhealthy at once, with its positions, and shows as
// controlfeed_gap 1; a halt has its own wording and metric.
func TestStatus_HealthGapAndHalt(t *testing.T) {
	s := &Status{State: "gap", Gap: &Gap{Cursor: 2, Next: 4, Missing: 3, Error: "feed jetstream: ...", Attempts: 1, Since: time.Now()},
		Process: &ProcessStatus{Gaps: 1}}
	r := s.Health(Thresholds{UnavailableGrace: time.Hour})
	if len(r) != 1 || !strings.Contains(r[0], "gap in the feed") || !strings.Contains(r[0], "after cursor 2 the next event delivered is 4") {
		t.Fatalf("Health with a gap = %q", r)
	}
	var b strings.Builder
	if err := writeMetrics(&b, s); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\ncontrolfeed_gap 1\n", "\ncontrolfeed_gaps_total 1\n", "\ncontrolfeed_unavailable 0\n", "\ncontrolfeed_halted 0\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, b.String())
		}
	}
	s = &Status{State: "halted", Halted: &Halt{EventID: "evt-9", ControlVersion: 9, Type: "kv.put", Error: "no handler"}}
	if r := s.Health(Thresholds{}); len(r) != 1 || !strings.Contains(r[0], "applier halted at event evt-9") || !strings.Contains(r[0], "cannot be applied") {
		t.Fatalf("Health when halted = %q", r)
	}
}

// A feed whose head is below the cursor (recreated, or lost its newest
// events) makes the node unhealthy with the applier's explanation, and
// shows as controlfeed_feed_behind_cursor 1.
func TestStatus_HealthFeedBehindCursor(t *testing.T) {
	s := &Status{FeedBehindCursor: "feed jetstream: its head is at control version 2, below this node's cursor 5: ... re-bootstrap"}
	r := s.Health(Thresholds{})
	if len(r) != 1 || !strings.Contains(r[0], "below this node's cursor") {
		t.Fatalf("Health = %q, want the feed-behind-cursor reason", r)
	}
	var b strings.Builder
	if err := writeMetrics(&b, s); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "\ncontrolfeed_feed_behind_cursor 1\n") {
		t.Fatalf("metrics lack controlfeed_feed_behind_cursor 1:\n%s", b.String())
	}
	s.FeedBehindCursor = ""
	b.Reset()
	if err := writeMetrics(&b, s); err != nil {
		t.Fatal(err)
	}
	if r := s.Health(Thresholds{}); len(r) != 0 || !strings.Contains(b.String(), "\ncontrolfeed_feed_behind_cursor 0\n") {
		t.Fatalf("after it clears: Health %q, metrics:\n%s", r, b.String())
	}
}

// A pump or an applier that makes no progress is unhealthy once the stall
// threshold passes, even though nothing failed: a publish that never
// returns, a pending row nobody publishes, a feed call that hangs, a cursor
// that stays put with events after it.
func TestStatus_HealthStalls(t *testing.T) {
	long := time.Now().Add(-2 * time.Minute)
	recent := time.Now().Add(-time.Second)
	lag := uint64(7)
	for _, tc := range []struct {
		name string
		s    Status
		want string // "" = healthy
	}{
		{"publish in flight too long", Status{Process: &ProcessStatus{HasPump: true, PumpWaiting: `publish of "e1" (outbox id 1) to file`, PumpWaitingSince: &long}},
			`pump stuck for 2m0s: publish of "e1" (outbox id 1) to file has not returned`},
		{"publish in flight briefly", Status{Process: &ProcessStatus{HasPump: true, PumpWaiting: "x", PumpWaitingSince: &recent}}, ""},
		{"old pending row", Status{OutboxPending: 3, OutboxOldestPending: &long, Process: &ProcessStatus{HasPump: true}},
			"pump not keeping up: 3 outbox rows pending, the oldest appended 2m0s ago"},
		{"old pending row without a pump in this process", Status{OutboxPending: 3, OutboxOldestPending: &long, Process: &ProcessStatus{}}, ""},
		{"fresh pending row", Status{OutboxPending: 3, OutboxOldestPending: &recent, Process: &ProcessStatus{HasPump: true}}, ""},
		{"feed call hangs", Status{Process: &ProcessStatus{ApplierWaiting: "poll of feed file after 3", ApplierWaitingSince: &long}},
			"applier stuck for 2m0s: poll of feed file after 3 has not returned"},
		{"cursor stays put", Status{Cursor: 3, Lag: &lag, Process: &ProcessStatus{StalledSince: &long}},
			"applier not progressing: the feed holds 7 events after cursor 3, which has not moved for 2m0s"},
		{"cursor recently moved", Status{Cursor: 3, Lag: &lag, Process: &ProcessStatus{StalledSince: &recent}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.s.Health(Thresholds{Stall: time.Minute})
			switch {
			case tc.want == "" && len(r) != 0:
				t.Errorf("Health = %q, want healthy", r)
			case tc.want != "" && (len(r) != 1 || !strings.Contains(r[0], tc.want)):
				t.Errorf("Health = %q, want one reason containing %q", r, tc.want)
			}
		})
	}
}

// trackProgress starts counting when the node is first seen behind, keeps
// the start while the cursor stays, restarts it when the cursor moves, and
// clears it when the node catches up.
func TestNode_TrackProgress(t *testing.T) {
	n := &Node{}
	lag := func(v uint64) *uint64 { return &v }
	if n.trackProgress(5, lag(0)) != nil || n.trackProgress(5, nil) != nil {
		t.Fatal("a caught-up node (or unknown lag) is not stalled")
	}
	first := n.trackProgress(5, lag(2))
	time.Sleep(5 * time.Millisecond)
	if again := n.trackProgress(5, lag(3)); first == nil || again == nil || !again.Equal(*first) {
		t.Fatalf("cursor unchanged: since %v then %v, want the same", first, again)
	}
	if moved := n.trackProgress(6, lag(2)); !moved.After(*first) {
		t.Fatalf("cursor moved: since %v, want after %v", moved, first)
	}
	if n.trackProgress(8, lag(0)) != nil {
		t.Fatal("caught up: still stalled")
	}
}
