package applier_test

import (
	"context"
	"errors"
	"testing"

	"github.com/controlfeed/controlfeed/applier"
)

// TestApplier_Conflict: an already-applied EventID delivered again with
// different content is not applied; the applier halts at it, counts and
// persists the conflict, and an operator's Skip moves it on while the
// original application stays.
func TestApplier_Conflict(t *testing.T) {
	ctx := context.Background()
	db, path := openDB(t)
	other := openSecond(t, path)
	src := &FakeSource{}
	h := newInsertHandler()
	a := newApplier(t, db, src, nil, h, nil)

	same := ev(1, typ)
	same.ControlVersion = 3 // a faithful redelivery: a plain duplicate
	forged := ev(1, typ)
	forged.ControlVersion = 4
	forged.Key = "k-other" // same EventID, different content
	src.Add(ev(1, typ), ev(2, typ), same, forged, ev(5, typ))

	n, err := a.Step(ctx)
	if !errors.Is(err, applier.ErrHalted) || !errors.Is(err, applier.ErrConflict) {
		t.Fatalf("Step = %d, %v; want a halt wrapping ErrConflict", n, err)
	}
	var ce *applier.ConflictError
	if !errors.As(err, &ce) || ce.ControlVersion != 4 || ce.EventID != "evt-1" || ce.Digest == ce.RecordedDigest {
		t.Fatalf("conflict error = %+v", ce)
	}
	if n != 3 || cursorOf(t, db) != 3 {
		t.Fatalf("Step moved %d, cursor %d; want 3 and 3 (stopped before the conflict)", n, cursorOf(t, db))
	}
	if c := h.count("evt-1"); c != 1 {
		t.Errorf("handler ran %d times for evt-1", c)
	}
	if got := rowCount(t, db, `SELECT COUNT(*) FROM t WHERE id = 'k-other'`); got != 0 {
		t.Errorf("the conflicting copy was applied (%d rows)", got)
	}
	st := a.Status()
	if st.Conflicts != 1 || st.Duplicates != 1 || st.Halted == nil || st.Halted.ControlVersion != 4 {
		t.Errorf("Status = %+v", st)
	}
	// Retrying does not count it again.
	if _, err := a.Step(ctx); !errors.Is(err, applier.ErrConflict) {
		t.Fatalf("retry: %v", err)
	}
	stored, err := applier.ReadStatus(ctx, other)
	if err != nil || stored.Conflicts != 1 || a.Status().Conflicts != 1 {
		t.Fatalf("conflicts: stored %d (%v), in memory %d; want 1", stored.Conflicts, err, a.Status().Conflicts)
	}

	if err := applier.Skip(ctx, other, "evt-1"); err != nil {
		t.Fatalf("Skip of the conflicting copy: %v", err)
	}
	if n, err := a.Step(ctx); n != 2 || err != nil {
		t.Fatalf("Step after Skip = %d, %v", n, err)
	}
	st = a.Status()
	if st.Cursor != 5 || st.Halted != nil || st.Skipped != 1 {
		t.Errorf("after Skip: %+v", st)
	}
	var outcome string
	if err := db.QueryRow(`SELECT outcome FROM controlfeed_applied_events WHERE event_id = 'evt-1'`).Scan(&outcome); err != nil || outcome != "applied" {
		t.Errorf("evt-1 recorded as %q (%v); the original must stay applied", outcome, err)
	}
	if got := rowCount(t, db, `SELECT COUNT(*) FROM t WHERE id = 'k-other'`); got != 0 {
		t.Errorf("the conflicting copy was applied after Skip")
	}
}
