package applier_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"sync/atomic"
	"testing"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/artifact/artifacttest"
	"github.com/controlfeed/controlfeed/controlevent"
)

// An event of a fresh batch recorded by another process (a Skip) after the
// applier's pre-transaction lookup makes the batched applied_events insert
// fall back to per-event recording: that event counts as skipped, its
// handler never runs, and every other event is applied once.
func TestApplier_BatchRecordFallsBackOnRecordedEvent(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	st := artifacttest.NewMemStore()
	src := &FakeSource{}
	var batch []controlevent.Event
	for _, e := range evs(1, 10, typ) {
		batch = append(batch, withArtifact(t, st, e, []byte("v-"+e.Key)))
	}
	src.Add(batch...)
	var once atomic.Bool
	st.GetFunc = func(ctx context.Context, ref string) (io.ReadCloser, error) {
		if once.CompareAndSwap(false, true) {
			// Another process records event 7 meanwhile.
			if _, err := db.ExecContext(ctx, `INSERT INTO controlfeed_applied_events (event_id, control_version, type, applied_at, outcome)
				VALUES (?, 7, ?, '2026-01-01T00:00:00Z', 'skipped')`, batch[6].EventID, typ); err != nil {
				return nil, err
			}
		}
		return st.Reopen().Get(ctx, ref) // the store itself, without this hook
	}
	h := newInsertHandler()
	a := newApplier(t, db, src, st, h, nil)
	n, err := a.Step(ctx)
	if n != 10 || err != nil {
		t.Fatalf("Step = %d, %v; want 10, nil", n, err)
	}
	if c := cursorOf(t, db); c != 10 {
		t.Errorf("cursor %d, want 10", c)
	}
	if got := h.count(batch[6].EventID); got != 0 {
		t.Errorf("handler ran %d times for the recorded event, want 0", got)
	}
	if got := rowCount(t, db, `SELECT COUNT(*) FROM t`); got != 9 {
		t.Errorf("%d data rows, want 9", got)
	}
	if s := a.Status(); s.Applied != 9 || s.Skipped != 1 {
		t.Errorf("Status applied %d skipped %d, want 9, 1", s.Applied, s.Skipped)
	}
}

// applier.Exec, inside a handler, runs its statement in the apply
// transaction (rolled back with a failing event) and, outside, is
// tx.ExecContext.
func TestExec(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	src := &FakeSource{}
	src.Add(evs(1, 5, typ)...)
	a := newApplier(t, db, src, nil, newInsertHandler(), func(c *applier.Config) {
		c.Handlers[typ] = func(ctx context.Context, tx *sql.Tx, e controlevent.Event, _ []byte) error {
			if _, err := applier.Exec(ctx, tx, `INSERT INTO t (id, v) VALUES (?, ?)`, e.Key, []byte("x")); err != nil {
				return err
			}
			if e.ControlVersion == 4 {
				return fmt.Errorf("fails after writing")
			}
			return nil
		}
	})
	if n, err := a.Step(ctx); n != 3 || err == nil {
		t.Fatalf("Step = %d, %v; want 3 and a halt", n, err)
	}
	if got := rowCount(t, db, `SELECT COUNT(*) FROM t`); got != 3 {
		t.Errorf("%d rows, want 3 (event 4's write rolled back)", got)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := applier.Exec(ctx, tx, `INSERT INTO t (id, v) VALUES ('outside', x'00')`); err != nil {
		t.Fatalf("Exec outside a handler: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := rowCount(t, db, `SELECT COUNT(*) FROM t WHERE id = 'outside'`); got != 1 {
		t.Errorf("Exec outside a handler wrote %d rows, want 1", got)
	}
}
