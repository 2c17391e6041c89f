package fleet_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/fleet"
)

func rep(node string, cursor uint64, digest string, cps map[uint64]string) fleet.Report {
	r := fleet.Report{Format: fleet.Format, Node: node, Cursor: cursor, StateDigest: fleet.Digest{Cursor: cursor, Digest: digest}}
	for c, d := range cps {
		r.DigestCheckpoints = append(r.DigestCheckpoints, fleet.Digest{Cursor: c, Digest: d})
	}
	return r
}

func TestView_States(t *testing.T) {
	now := time.Now()
	fresh, old := now.Add(-time.Second), now.Add(-time.Minute)
	halted := rep("halted", 5, "d5", nil)
	halted.Halted = &fleet.Halt{EventID: "e6", ControlVersion: 6, Error: "boom"}
	unav := rep("unav", 5, "d5", nil)
	unav.Unavailable = &fleet.Unavailable{Op: "poll", Error: "no servers"}
	entries := []fleet.Entry{
		{Report: rep("synced", 10, "d10", nil), SeenAt: fresh},
		{Report: rep("applying", 9, "d9", nil), SeenAt: fresh},
		{Report: rep("lagging", 2, "d2", nil), SeenAt: fresh},
		{Report: halted, SeenAt: fresh},
		{Report: unav, SeenAt: fresh},
		{Report: rep("stale", 10, "d10", nil), SeenAt: old},
	}
	created := map[uint64]time.Time{9: now.Add(-time.Second), 2: now.Add(-time.Hour)}
	rows := fleet.View(entries, fleet.ViewConfig{Now: now, StaleAfter: 30 * time.Second, LaggingAfter: 10 * time.Second,
		EventTime: func(c uint64) (time.Time, bool) { t, ok := created[c]; return t, ok }})
	got := map[string]fleet.Row{}
	for _, r := range rows {
		got[r.Node] = r
	}
	for name, want := range map[string]fleet.State{"synced": fleet.StateSynced, "applying": fleet.StateApplying, "lagging": fleet.StateLagging,
		"halted": fleet.StateHalted, "unav": fleet.StateUnavailable, "stale": fleet.StateStale} {
		if got[name].State != want {
			t.Errorf("%s: state %s, want %s", name, got[name].State, want)
		}
	}
	if r := got["lagging"]; r.LagEvents != 8 || r.LagSeconds == nil || *r.LagSeconds < 3599 {
		t.Errorf("lagging: lag %d events, %v s; want 8 and an hour", r.LagEvents, r.LagSeconds)
	}
	if r := got["halted"]; r.LagSeconds != nil {
		t.Errorf("halted: lag seconds %v with no event time known; want null", *r.LagSeconds)
	}
	if reason := fleet.NotYetReason(got["halted"]); reason != "halted at event e6 (control_version 6): boom" {
		t.Errorf("NotYetReason(halted) = %q", reason)
	}
}

func TestView_Agreement(t *testing.T) {
	now := time.Now()
	app := func(r fleet.Report, cursor uint64, d string) fleet.Report {
		r.AppDigest = &fleet.AppDigest{Cursor: cursor, Digest: d}
		return r
	}
	cp := map[uint64]string{1: "c1", 100: "c100"}
	forked := map[uint64]string{1: "c1", 100: "X100"}
	for _, tc := range []struct {
		name    string
		reports []fleet.Report
		want    map[string]string
	}{
		{"alone", []fleet.Report{rep("a", 5, "d5", nil)}, map[string]string{"a": "alone"}},
		{"same cursor", []fleet.Report{rep("a", 150, "d150", cp), rep("b", 150, "d150", cp)},
			map[string]string{"a": "agrees", "b": "agrees"}},
		{"common checkpoint", []fleet.Report{rep("a", 150, "d150", cp), rep("b", 120, "d120", cp)},
			map[string]string{"a": "agrees", "b": "agrees"}},
		{"two differ", []fleet.Report{rep("a", 150, "d150", cp), rep("b", 150, "X150", forked)},
			map[string]string{"a": "DIFFERS (vs 1 node)", "b": "DIFFERS (vs 1 node)"}},
		{"one of three differs", []fleet.Report{rep("a", 150, "d150", cp), rep("b", 150, "d150", cp), rep("c", 150, "X150", forked)},
			map[string]string{"a": "agrees", "b": "agrees", "c": "DIFFERS (vs 2 nodes)"}},
		{"no common point", []fleet.Report{rep("a", 5, "d5", nil), rep("b", 7, "d7", nil)},
			map[string]string{"a": "no common point", "b": "no common point"}},
		{"edited table", []fleet.Report{
			app(rep("a", 150, "d150", cp), 150, "t1"), app(rep("b", 150, "d150", cp), 150, "t1"),
			app(rep("c", 150, "d150", cp), 150, "EDITED"), app(rep("late", 120, "d120", cp), 120, "t0")},
			map[string]string{"a": "agrees", "b": "agrees", "c": "DIFFERS (vs 2 nodes)", "late": "agrees"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var es []fleet.Entry
			for _, r := range tc.reports {
				es = append(es, fleet.Entry{Report: r, SeenAt: now})
			}
			for _, r := range fleet.View(es, fleet.ViewConfig{Now: now}) {
				if got := r.Digest.String(); got != tc.want[r.Node] {
					t.Errorf("%s: %s (%+v), want %s", r.Node, got, r.Digest, tc.want[r.Node])
				}
			}
		})
	}
}

func TestEventOutcome(t *testing.T) {
	now := time.Now()
	halted := rep("h", 5, "d", nil)
	halted.Halted = &fleet.Halt{EventID: "e6", ControlVersion: 6, Error: "boom"}
	skipped := rep("s", 9, "d", nil)
	skipped.RecentSkipped = []fleet.SkippedEvent{{EventID: "e6", ControlVersion: 6}}
	es := []fleet.Entry{{Report: rep("a", 9, "d", nil), SeenAt: now}, {Report: halted, SeenAt: now},
		{Report: skipped, SeenAt: now}, {Report: rep("behind", 3, "d", nil), SeenAt: now}}
	want := map[string]string{"a": fleet.OutcomeApplied, "h": fleet.OutcomeHaltedHere, "s": fleet.OutcomeSkipped, "behind": fleet.OutcomeNotYet}
	for _, r := range fleet.View(es, fleet.ViewConfig{Now: now}) {
		if got, _ := fleet.EventOutcome(r, "e6", 6); got != want[r.Node] {
			t.Errorf("%s: %s, want %s", r.Node, got, want[r.Node])
		}
	}
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"format", `{"format":2,"node":"a"}`},
		{"name", `{"format":1,"node":"../x"}`},
		{"empty name", `{"format":1,"node":""}`},
		{"json", `{"format":1,`},
	} {
		if _, err := fleet.Decode([]byte(tc.in)); err == nil {
			t.Errorf("%s: Decode(%s) accepted it", tc.name, tc.in)
		}
	}
	r, err := fleet.Decode([]byte(`{"format":1,"node":"edge-7.eu","cursor":4,"future_field":true}`))
	if err != nil || r.Node != "edge-7.eu" || r.Cursor != 4 {
		t.Errorf("Decode with an unknown key = %+v, %v", r, err)
	}
}

// BenchmarkView_1000Distinct is the worst case of View: 1,000 nodes at
// 1,000 different cursors, so no two share their digests.
func BenchmarkView_1000Distinct(b *testing.B) {
	now := time.Now()
	var es []fleet.Entry
	for i := range 1000 {
		cur := uint64(5000 + i)
		cps := map[uint64]string{}
		for k := range uint64(16) {
			c := (cur/100-k)*100 + 1
			cps[c] = "c" + strconv.FormatUint(c, 10)
		}
		r := rep("node-"+strconv.Itoa(i), cur, "d"+strconv.Itoa(i), cps)
		r.AppDigest = &fleet.AppDigest{Cursor: cur, Digest: "a"}
		es = append(es, fleet.Entry{Report: r, SeenAt: now})
	}
	for b.Loop() {
		fleet.View(es, fleet.ViewConfig{Now: now})
	}
}
