package applier_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/controlevent"
)

// EventDigest is recorded in every node's database and compared with later
// deliveries, so its definition may never drift: sha256 of json.Marshal of
// the event with ControlVersion zeroed, whatever encoder computes it.
func TestEventDigest_Stable(t *testing.T) {
	at := time.Date(2026, 11, 27, 13, 16, 15, 123456789, time.UTC)
	for _, e := range []controlevent.Event{
		ev(1, typ),
		{EventID: "e<&>\u2028", Type: "kv.put", Key: "k\x00\"\\\u2029\xff", Version: -3, BaseVersion: 1 << 62,
			ArtifactRef: "sha256:" + strings.Repeat("a", 64), Checksum: "sha256:" + strings.Repeat("a", 64),
			ControlVersion: 99, CreatedAt: at.In(time.FixedZone("x", -5*3600))},
		{EventID: strings.Repeat("é", 100), Type: "t", CreatedAt: at},
	} {
		ref := e
		ref.ControlVersion = 0
		b, err := json.Marshal(ref)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		if got, want := applier.EventDigest(e), "sha256:"+hex.EncodeToString(sum[:]); got != want {
			t.Errorf("EventDigest(%q) = %s, want %s (sha256 of json.Marshal)", e.EventID, got, want)
		}
	}
}

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
