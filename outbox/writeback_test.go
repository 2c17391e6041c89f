package outbox

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
)

// TestWriteBack_Batch: a chunk is recorded by one statement; every row gets
// its own ControlVersion, and a row no longer pending is left alone.
func TestWriteBack_Batch(t *testing.T) {
	ctx := context.Background()
	db, err := sqlitedb.Open(ctx, filepath.Join(t.TempDir(), "o.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b", "c", "d"} {
		if err := Append(ctx, tx, controlevent.Event{EventID: id, Type: "t", CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	p := &Pump{db: db}
	rows, err := (&Pump{db: db, cfg: Config{BatchSize: 10}}).loadPending(ctx, 0)
	if err != nil || len(rows) != 4 {
		t.Fatalf("loadPending = %d rows, %v; want 4", len(rows), err)
	}
	// Row "b" is published by someone else first (cv 99).
	if _, err := db.ExecContext(ctx, `UPDATE controlfeed_outbox SET published_control_version = 99 WHERE event_id = 'b'`); err != nil {
		t.Fatal(err)
	}
	stamped := []controlevent.Event{{EventID: "a", ControlVersion: 7}, {EventID: "b", ControlVersion: 8}, {EventID: "c", ControlVersion: 1 << 40}}
	if err := p.writeBack(ctx, rows[:3], stamped, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"a": int64(7), "b": int64(99), "c": int64(1 << 40), "d": nil}
	for id, w := range want {
		var cv any
		var attempts int
		if err := db.QueryRowContext(ctx, `SELECT published_control_version, attempt_count FROM controlfeed_outbox WHERE event_id = ?`, id).Scan(&cv, &attempts); err != nil {
			t.Fatal(err)
		}
		if cv != w {
			t.Errorf("row %s: published_control_version %v, want %v", id, cv, w)
		}
		if wantAttempts := map[string]int{"a": 1, "c": 1}[id]; attempts != wantAttempts {
			t.Errorf("row %s: attempt_count %d, want %d", id, attempts, wantAttempts)
		}
	}
	if got := publishedPairs(rows[:2], stamped[:2]); got != `[[1,7],[2,8]]` {
		t.Errorf("publishedPairs = %s", got)
	}
}
