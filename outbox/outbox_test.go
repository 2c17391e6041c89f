package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
	"github.com/controlfeed/controlfeed/outbox"
)

// openDB returns a migrated database in a fresh temporary file and its path.
func openDB(t testing.TB) (*sql.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "producer.db")
	db := openPath(t, path)
	if err := outbox.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return db, path
}

func openPath(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sqlitedb.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func newEvent(i int) controlevent.Event {
	payload := []byte(fmt.Sprintf("payload %d", i))
	sum := controlevent.Checksum(payload)
	return controlevent.Event{
		EventID:     fmt.Sprintf("evt-%04d", i),
		Type:        "kv.put",
		Key:         fmt.Sprintf("k/%d", i),
		Version:     int64(i),
		BaseVersion: int64(i - 1),
		ArtifactRef: sum,
		Checksum:    sum,
		CreatedAt:   time.Date(2026, 11, 27, 10, 0, i, 0, time.UTC),
	}
}

// appendCommitted appends each event in its own committed transaction.
func appendCommitted(t testing.TB, db *sql.DB, events ...controlevent.Event) {
	t.Helper()
	ctx := context.Background()
	for _, e := range events {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := outbox.Append(ctx, tx, e); err != nil {
			tx.Rollback()
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
}

func readCounts(t testing.TB, db *sql.DB) outbox.Counts {
	t.Helper()
	c, err := outbox.ReadCounts(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestMigrate(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		ctx := context.Background()
		t.Run("Twice", func(t *testing.T) {
			db, _ := tdb.Open(t) // migrated once
			appendCommitted(t, db, newEvent(1))
			if err := outbox.Migrate(ctx, db); err != nil {
				t.Fatalf("second Migrate: %v", err)
			}
			if c := readCounts(t, db); c.Pending != 1 {
				t.Fatalf("after second Migrate: %+v, want the pending row kept", c)
			}
			var v int
			if err := db.QueryRow(`SELECT version FROM controlfeed_schema WHERE component = $1`, outbox.SchemaComponent).Scan(&v); err != nil {
				t.Fatal(err)
			}
			if v != outbox.SchemaVersion {
				t.Fatalf("schema version %d, want %d", v, outbox.SchemaVersion)
			}
		})
		t.Run("ConcurrentFromTwoDBs", func(t *testing.T) {
			open := tdb.New(t)
			dbs := []*sql.DB{open(t), open(t), open(t)}
			var wg sync.WaitGroup
			errs := make([]error, len(dbs))
			start := make(chan struct{})
			for i, db := range dbs {
				wg.Go(func() {
					<-start
					errs[i] = outbox.Migrate(ctx, db)
				})
			}
			close(start)
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("Migrate on db %d: %v", i, err)
				}
			}
			appendCommitted(t, dbs[1], newEvent(1))
			if c := readCounts(t, dbs[2]); c.Pending != 1 {
				t.Fatalf("counts %+v, want 1 pending", c)
			}
		})
		t.Run("NewerSchemaRefused", func(t *testing.T) {
			db, _ := tdb.Open(t)
			if _, err := db.Exec(`UPDATE controlfeed_schema SET version = 99 WHERE component = $1`, outbox.SchemaComponent); err != nil {
				t.Fatal(err)
			}
			if err := outbox.Migrate(ctx, db); err == nil {
				t.Fatal("Migrate accepted a schema version newer than the program's")
			}
		})
	})
}

func TestAppend(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		ctx := context.Background()
		t.Run("RolledBackLeavesNothing", func(t *testing.T) {
			db, _ := tdb.Open(t)
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := outbox.Append(ctx, tx, newEvent(1)); err != nil {
				t.Fatal(err)
			}
			if err := tx.Rollback(); err != nil {
				t.Fatal(err)
			}
			if c := readCounts(t, db); c != (outbox.Counts{}) {
				t.Fatalf("after rollback: %+v, want nothing", c)
			}
			// The same EventID is free again.
			appendCommitted(t, db, newEvent(1))
			if c := readCounts(t, db); c.Pending != 1 {
				t.Fatalf("after commit: %+v, want 1 pending", c)
			}
		})
		t.Run("Rejects", func(t *testing.T) {
			db, _ := tdb.Open(t)
			appendCommitted(t, db, newEvent(1))
			noID := newEvent(2)
			noID.EventID = ""
			noType := newEvent(3)
			noType.Type = ""
			stamped := newEvent(4)
			stamped.ControlVersion = 7
			badSum := newEvent(5)
			badSum.Checksum = "md5:abc"
			for _, tc := range []struct {
				name string
				e    controlevent.Event
				want error
			}{
				{"ErrEmptyID", noID, controlevent.ErrInvalid},
				{"ErrEmptyType", noType, controlevent.ErrInvalid},
				{"ErrControlVersion", stamped, controlevent.ErrInvalid},
				{"ErrChecksum", badSum, controlevent.ErrInvalid},
				{"ErrDuplicate", newEvent(1), outbox.ErrDuplicate},
			} {
				t.Run(tc.name, func(t *testing.T) {
					tx, err := db.BeginTx(ctx, nil)
					if err != nil {
						t.Fatal(err)
					}
					defer tx.Rollback()
					err = outbox.Append(ctx, tx, tc.e)
					if !errors.Is(err, tc.want) {
						t.Fatalf("Append = %v, want an error wrapping %v", err, tc.want)
					}
				})
			}
			if err := outbox.Append(ctx, nil, newEvent(9)); err == nil {
				t.Error("Append with a nil tx succeeded")
			}
			if c := readCounts(t, db); c.Pending != 1 {
				t.Fatalf("counts %+v, want only the first event", c)
			}
		})
		t.Run("SetsCreatedAtAndRoundTrips", func(t *testing.T) {
			db, _ := tdb.Open(t)
			e := newEvent(1)
			e.CreatedAt = time.Time{}
			before := time.Now()
			appendCommitted(t, db, e, newEvent(2))
			rows, err := outbox.ListPending(ctx, db, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != 2 {
				t.Fatalf("ListPending returned %d rows, want 2", len(rows))
			}
			got := rows[0].Event
			if got.CreatedAt.Before(before.Add(-time.Second)) || got.CreatedAt.IsZero() {
				t.Errorf("CreatedAt = %v, want about now", got.CreatedAt)
			}
			want := newEvent(2)
			if rows[1].Event != want {
				t.Errorf("round trip:\n got %+v\nwant %+v", rows[1].Event, want)
			}
			if rows[0].ID >= rows[1].ID {
				t.Errorf("ids %d, %d are not ascending", rows[0].ID, rows[1].ID)
			}
			c := readCounts(t, db)
			if !c.OldestPending.Equal(got.CreatedAt) && !c.OldestPending.Equal(want.CreatedAt) {
				t.Errorf("OldestPending = %v, want one of the rows' CreatedAt", c.OldestPending)
			}
			if want.CreatedAt.Before(got.CreatedAt) && !c.OldestPending.Equal(want.CreatedAt) {
				t.Errorf("OldestPending = %v, want the earlier %v", c.OldestPending, want.CreatedAt)
			}
		})
	})
}

func TestMarkDeadAndPrune(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		ctx := context.Background()
		db, _ := tdb.Open(t)
		appendCommitted(t, db, newEvent(1), newEvent(2), newEvent(3))
		if err := outbox.MarkDead(ctx, db, "evt-0002", ""); err != nil {
			t.Fatal(err)
		}
		if err := outbox.MarkDead(ctx, db, "evt-0002", "again"); !errors.Is(err, outbox.ErrNotPending) {
			t.Fatalf("MarkDead of a dead row = %v, want ErrNotPending", err)
		}
		if err := outbox.MarkDead(ctx, db, "nope", ""); !errors.Is(err, outbox.ErrNotPending) {
			t.Fatalf("MarkDead of a missing row = %v, want ErrNotPending", err)
		}
		sink := &FakeSink{}
		p, err := outbox.NewPump(db, sink, nil)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := p.Pass(ctx); err != nil || n != 2 {
			t.Fatalf("Pass = %d, %v; want 2, nil", n, err)
		}
		dead, err := outbox.ListDead(ctx, db, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(dead) != 1 || dead[0].Event.EventID != "evt-0002" || dead[0].DeadReason == "" || dead[0].DeadAt.IsZero() {
			t.Fatalf("ListDead = %+v, want evt-0002 with a reason and time", dead)
		}
		if c := readCounts(t, db); c.Pending != 0 || c.Published != 2 || c.Dead != 1 {
			t.Fatalf("counts %+v, want 0 pending, 2 published, 1 dead", c)
		}
		if n, err := outbox.Prune(ctx, db, time.Now().Add(-time.Hour)); err != nil || n != 0 {
			t.Fatalf("Prune(an hour ago) = %d, %v; want 0, nil", n, err)
		}
		if n, err := outbox.Prune(ctx, db, time.Now().Add(time.Hour)); err != nil || n != 2 {
			t.Fatalf("Prune(in an hour) = %d, %v; want 2, nil", n, err)
		}
		if c := readCounts(t, db); c.Published != 0 || c.Dead != 1 {
			t.Fatalf("after Prune: %+v, want the dead row kept", c)
		}
		// Ids are never reused after pruning.
		appendCommitted(t, db, newEvent(4))
		rows, err := outbox.ListPending(ctx, db, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 1 || rows[0].ID <= 3 {
			t.Fatalf("after Prune the new row has id %+v, want > 3", rows)
		}
	})
}
