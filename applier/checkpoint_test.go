package applier_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
)

// runUntil runs a until its cursor reaches cv, then stops it.
func runUntil(t *testing.T, a *applier.Applier, cv uint64) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	deadline := time.Now().Add(60 * time.Second) // a hang guard, not a speed assertion
	for a.Status().Cursor < cv {
		if st := a.Status(); st.Halted != nil || time.Now().After(deadline) {
			cancel()
			t.Fatalf("Run did not reach cursor %d: %+v", cv, a.Status())
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

// TestApplier_RunCheckpointsInBackground: Run commits on a connection with
// SQLite's automatic checkpoint off and checkpoints the WAL itself; once
// Run returns the WAL is fully checkpointed and every pooled connection has
// automatic checkpoints on again.
func TestApplier_RunCheckpointsInBackground(t *testing.T) {
	db, _ := openDB(t)
	src := &FakeSource{}
	// Enough pages to pass SQLite's 1000-page automatic threshold.
	big := make([]byte, 2000)
	a := newApplier(t, db, src, nil, newInsertHandler(), func(c *applier.Config) {
		c.MaxBatch = 8
		c.Handlers = map[string]applier.Handler{typ: func(ctx context.Context, tx *sql.Tx, ev controlevent.Event, _ []byte) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO t (id, v) VALUES (?, ?)`, ev.Key, big)
			return err
		}}
	})
	src.Add(evs(1, 3000, typ)...)
	runUntil(t, a, 3000)
	if n := rowCount(t, db, `SELECT count(*) FROM t`); n != 3000 {
		t.Fatalf("%d rows applied, want 3000", n)
	}
	ctx := context.Background()
	var busy, logFrames, done int
	if err := db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &logFrames, &done); err != nil {
		t.Fatal(err)
	}
	if busy != 0 || logFrames != done {
		t.Errorf("checkpoint after Run: busy %d, %d frames in the WAL, %d checkpointed", busy, logFrames, done)
	}
	// Hold every open connection at once and read its setting.
	var conns []*sql.Conn
	for range db.Stats().OpenConnections {
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	for i, c := range conns {
		var pages int
		if err := c.QueryRowContext(ctx, `PRAGMA wal_autocheckpoint`).Scan(&pages); err != nil {
			t.Fatal(err)
		}
		if pages != sqlitedb.AutoCheckpointPages {
			t.Errorf("connection %d: wal_autocheckpoint %d after Run, want %d as sqlitedb.Open set it", i, pages, sqlitedb.AutoCheckpointPages)
		}
	}
}

// TestApplier_RunSmallPool: with a pool of two connections Run does not pin
// one (Step's reads would starve) and still applies everything.
func TestApplier_RunSmallPool(t *testing.T) {
	db, _ := openDB(t)
	db.SetMaxOpenConns(2)
	src := &FakeSource{}
	src.Add(evs(1, 50, typ)...)
	a := newApplier(t, db, src, nil, newInsertHandler(), func(c *applier.Config) { c.MaxBatch = 4 })
	runUntil(t, a, 50)
	if n := rowCount(t, db, `SELECT count(*) FROM t`); n != 50 {
		t.Fatalf("%d rows applied, want 50", n)
	}
}
