package applier_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/artifact/artifacttest"
	"github.com/controlfeed/controlfeed/controlevent"
)

// A handler failing at event k of a large batch (tried first without
// savepoints) still commits events 1..k-1, undoes k's own write, and applies
// nothing after k; the retry after the cause is fixed applies the rest.
func TestApplier_OptimisticBatchFallbackKeepsPrefix(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	src := &FakeSource{}
	h := newInsertHandler()
	const k = 57
	broken := true
	a := newApplier(t, db, src, nil, h, func(c *applier.Config) {
		c.Handlers[typ] = func(ctx context.Context, tx *sql.Tx, e controlevent.Event, p []byte) error {
			if err := h.handle(ctx, tx, e, p); err != nil {
				return err
			}
			if e.ControlVersion == k && broken {
				return errors.New("fails after writing")
			}
			return nil
		}
	})
	src.Add(evs(1, 200, typ)...)
	n, err := a.Step(ctx)
	if n != k-1 || !errors.Is(err, applier.ErrHalted) {
		t.Fatalf("Step = %d, %v; want %d, ErrHalted", n, err, k-1)
	}
	if c := cursorOf(t, db); c != k-1 {
		t.Errorf("cursor = %d, want %d", c, k-1)
	}
	if got := rowCount(t, db, `SELECT COUNT(*) FROM t`); got != k-1 {
		t.Errorf("%d data rows, want %d (the prefix; the failing event's write undone)", got, k-1)
	}
	if got := rowCount(t, db, `SELECT COUNT(*) FROM t WHERE id = ?`, fmt.Sprintf("k%d", k)); got != 0 {
		t.Errorf("the failing event's write survived")
	}
	if got := rowCount(t, db, `SELECT COUNT(*) FROM controlfeed_applied_events`); got != k-1 {
		t.Errorf("%d applied_events, want %d", got, k-1)
	}
	broken = false
	total := n
	for total < 200 {
		n, err := a.Step(ctx)
		if err != nil || n == 0 {
			t.Fatalf("retry Step = %d, %v after %d", n, err, total)
		}
		total += n
	}
	if got := rowCount(t, db, `SELECT COUNT(*) FROM t`); got != 200 || cursorOf(t, db) != 200 {
		t.Errorf("%d rows, cursor %d; want 200, 200", got, cursorOf(t, db))
	}
}

// Events polled beyond MaxBatch are applied by the next Step without a new
// Poll, unless the cursor moved meanwhile (SetCursor), which drops them.
func TestApplier_LeftoverBatch(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	src := &FakeSource{}
	h := newInsertHandler()
	a := newApplier(t, db, src, nil, h, func(c *applier.Config) { c.MaxBatch = 4 })
	src.Add(evs(1, 10, typ)...)
	for i, want := range []int{4, 4, 2} {
		if n, err := a.Step(ctx); n != want || err != nil {
			t.Fatalf("Step %d = %d, %v; want %d", i, n, err, want)
		}
	}
	// One Poll for the 10, and one made ahead while the last batch
	// committed (the first Poll was full: a backlog).
	if src.Polls != 2 {
		t.Errorf("%d polls for 10 events with MaxBatch 4; want 2 (the rest kept, then one poll ahead)", src.Polls)
	}
	if c := cursorOf(t, db); c != 10 {
		t.Fatalf("cursor = %d", c)
	}

	src.Add(evs(11, 20, typ)...)
	if n, err := a.Step(ctx); n != 4 || err != nil {
		t.Fatalf("Step = %d, %v", n, err)
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if err := applier.SetCursor(ctx, tx, 16); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	polls := src.Polls
	if n, err := a.Step(ctx); n != 4 || err != nil {
		t.Fatalf("Step after SetCursor = %d, %v; want 4", n, err)
	}
	if src.Polls <= polls {
		t.Errorf("Step after SetCursor did not poll again")
	}
	if c := cursorOf(t, db); c != 20 {
		t.Errorf("cursor = %d, want 20 (events 17..20 after the moved cursor)", c)
	}
	for i := 15; i <= 16; i++ {
		if c := h.count(fmt.Sprintf("evt-%d", i)); c != 0 {
			t.Errorf("evt-%d applied %d times, want 0 (passed over by SetCursor)", i, c)
		}
	}
}

// Artifacts are fetched several at a time; a missing one at event k still
// halts exactly there with events 1..k-1 applied.
func TestApplier_ConcurrentPrefetchFailure(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	st := artifacttest.NewMemStore()
	src := &FakeSource{}
	h := newInsertHandler()
	a := newApplier(t, db, src, st, h, nil)
	for cv := uint64(1); cv <= 20; cv++ {
		e := withArtifact(t, st, ev(cv, typ), []byte(fmt.Sprintf("payload %d", cv)))
		if cv == 13 {
			e.ArtifactRef = controlevent.Checksum([]byte("never stored"))
			e.Checksum = e.ArtifactRef
		}
		src.Add(e)
	}
	n, err := a.Step(ctx)
	if n != 12 || !errors.Is(err, applier.ErrHalted) {
		t.Fatalf("Step = %d, %v; want 12, ErrHalted", n, err)
	}
	if hs := a.Status().Halted; hs == nil || hs.ControlVersion != 13 {
		t.Fatalf("Halted = %+v, want at control version 13", hs)
	}
	var v []byte
	if err := db.QueryRow(`SELECT v FROM t WHERE id = 'k12'`).Scan(&v); err != nil || string(v) != "payload 12" {
		t.Fatalf("k12 = %q, %v; want its payload", v, err)
	}
	if got := rowCount(t, db, `SELECT COUNT(*) FROM t`); got != 12 {
		t.Errorf("%d rows, want 12", got)
	}
}
