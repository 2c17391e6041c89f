package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/outbox"
)

// With small chunks, the write-back of one chunk runs while the next is
// published: the feed and the recorded ControlVersions still follow outbox
// order, and a publish failure in a later chunk records exactly the rows
// before it.
func TestPump_OverlappedChunksKeepOrder(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		for _, kind := range sinkKinds {
			t.Run(kind.name, func(t *testing.T) {
				ctx := context.Background()
				db, _ := tdb.Open(t)
				for i := 1; i <= 10; i++ {
					appendCommitted(t, db, newEvent(i))
				}
				var broken atomic.Bool
				broken.Store(true)
				sink, fake := kind.make(func(e controlevent.Event) error {
					if e.EventID == "evt-0008" && broken.Load() {
						return errors.New("broker unavailable")
					}
					return nil
				})
				p := newPump(t, db, sink, &outbox.Config{BatchSize: 3})
				n, err := p.Pass(ctx)
				if n != 7 || err == nil || !strings.Contains(err.Error(), "evt-0008") {
					t.Fatalf("Pass = %d, %v; want 7 and the error naming evt-0008", n, err)
				}
				if rows := pending(t, db); len(rows) != 3 || rows[0].Event.EventID != "evt-0008" || rows[0].AttemptCount != 1 {
					t.Fatalf("pending = %+v, want evt-0008..10 with one attempt on evt-0008", rows)
				}
				pub := published(t, db)
				for i := 1; i <= 7; i++ {
					if cv := pub[fmt.Sprintf("evt-%04d", i)]; cv != uint64(i) {
						t.Errorf("evt-%04d recorded as %d, want %d", i, cv, i)
					}
				}
				broken.Store(false)
				if n, err := p.Pass(ctx); n != 3 || err != nil {
					t.Fatalf("Pass after repair = %d, %v; want 3, nil", n, err)
				}
				if got, want := ids(fake.Feed()), "evt-0001,evt-0002,evt-0003,evt-0004,evt-0005,evt-0006,evt-0007,evt-0008,evt-0009,evt-0010"; got != want {
					t.Fatalf("feed %s, want %s", got, want)
				}
				if st := p.Stats(); st.Published != 10 {
					t.Fatalf("Stats.Published = %d, want 10", st.Published)
				}
			})
		}
	})
}

// A write-back that fails while the next chunk is being published stops the
// pass there: the next chunk, published but not recorded, stays pending, no
// later chunk is published, and the next pass republishes with the same
// EventIDs and records the original ControlVersions.
func TestPump_OverlappedWriteBackFailureStops(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		ctx := context.Background()
		db, _ := tdb.Open(t)
		for i := 1; i <= 10; i++ {
			appendCommitted(t, db, newEvent(i))
		}
		// Recording evt-0002 as published fails (as a full disk would).
		repair := failWriteBack(t, db, "evt-0002")
		sink := &FakeSink{}
		p := newPump(t, db, sink, &outbox.Config{BatchSize: 3})
		n, err := p.Pass(ctx)
		if n != 0 || err == nil || !strings.Contains(err.Error(), "injected write-back failure") {
			t.Fatalf("Pass = %d, %v; want 0 and the write-back error", n, err)
		}
		if rows := pending(t, db); len(rows) != 10 {
			t.Fatalf("%d pending rows, want all 10 (nothing recorded)", len(rows))
		}
		// Chunk 2 may have been published during chunk 1's write-back; chunk 3
		// must not have been.
		for _, e := range sink.Calls() {
			if e.EventID >= "evt-0007" {
				t.Fatalf("%s was published after the failed write-back; calls %s", e.EventID, ids(sink.Calls()))
			}
		}
		repair()
		if n, err := p.Pass(ctx); n != 10 || err != nil {
			t.Fatalf("Pass after repair = %d, %v; want 10, nil", n, err)
		}
		pub := published(t, db)
		for i := 1; i <= 10; i++ {
			if cv := pub[fmt.Sprintf("evt-%04d", i)]; cv != uint64(i) {
				t.Errorf("evt-%04d recorded as %d, want %d (dedup keeps the first ControlVersion)", i, cv, i)
			}
		}
	})
}

// failWriteBack makes recording eventID as published fail with "injected
// write-back failure" (as a full disk would), by a trigger in db's dialect,
// until the returned repair is called.
func failWriteBack(t *testing.T, db *sql.DB, eventID string) (repair func()) {
	t.Helper()
	ctx := context.Background()
	create := []string{`CREATE TRIGGER fail_writeback BEFORE UPDATE ON controlfeed_outbox
		WHEN NEW.event_id = '` + eventID + `' AND NEW.published_control_version IS NOT NULL
		BEGIN SELECT RAISE(ABORT, 'injected write-back failure'); END`}
	drop := `DROP TRIGGER fail_writeback`
	if outbox.DialectName(db) == "postgres" {
		create = []string{`CREATE FUNCTION fail_writeback() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.event_id = '` + eventID + `' AND NEW.published_control_version IS NOT NULL THEN
		RAISE EXCEPTION 'injected write-back failure';
	END IF;
	RETURN NEW;
END $$`, `CREATE TRIGGER fail_writeback BEFORE UPDATE ON controlfeed_outbox
	FOR EACH ROW EXECUTE FUNCTION fail_writeback()`}
		drop = `DROP TRIGGER fail_writeback ON controlfeed_outbox`
	}
	for _, q := range create {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	return func() {
		t.Helper()
		if _, err := db.ExecContext(ctx, drop); err != nil {
			t.Fatal(err)
		}
	}
}
