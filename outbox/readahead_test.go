package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/outbox"
)

// Many small chunks go through the pass's database worker (read ahead,
// write-back behind) while a producer keeps committing rows during the
// pass: the feed and the recorded ControlVersions follow outbox order,
// rows committed during the pass are published after the ones before them,
// and a dead row in the middle of a read-ahead chunk is skipped.
func TestPump_ReadAheadKeepsOrder(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		ctx := context.Background()
		db, _ := tdb.Open(t)
		for i := 1; i <= 30; i++ {
			appendCommitted(t, db, newEvent(i))
		}
		if _, err := db.Exec(`UPDATE controlfeed_outbox SET payload_json = '{' WHERE event_id = 'evt-0017'`); err != nil {
			t.Fatal(err)
		}
		sink := &FakeSink{}
		next := 31
		sink.AppendFunc = func(ctx context.Context, e controlevent.Event) (controlevent.Event, error) {
			// A producer commits while rows are published (Append is called
			// from one goroutine, so next needs no lock).
			if next <= 45 {
				appendCommitted(t, db, newEvent(next))
				next++
			}
			return sink.Stamp(e)
		}
		p := newPump(t, db, sink, &outbox.Config{BatchSize: 4})
		total := 0
		for range 5 { // rows committed late may need another pass
			n, err := p.Pass(ctx)
			if err != nil {
				t.Fatal(err)
			}
			total += n
			if len(pending(t, db)) == 0 {
				break
			}
		}
		if total != 44 {
			t.Fatalf("published %d rows, want 44 (45 minus the dead one)", total)
		}
		var want []string
		for i := 1; i <= 45; i++ {
			if i != 17 {
				want = append(want, fmt.Sprintf("evt-%04d", i))
			}
		}
		if got := ids(sink.Feed()); got != strings.Join(want, ",") {
			t.Fatalf("feed %s\nwant %s", got, strings.Join(want, ","))
		}
		pub := published(t, db)
		for cv, id := range want {
			if pub[id] != uint64(cv+1) {
				t.Errorf("%s recorded as %d, want %d", id, pub[id], cv+1)
			}
		}
		if c := readCounts(t, db); c.Pending != 0 || c.Dead != 1 || c.Published != 44 {
			t.Fatalf("counts %+v", c)
		}
	})
}

// Canceling a multi-chunk Pass in the middle of a chunk stops it: nothing
// after the row in flight is published, nothing is recorded that the Sink
// did not accept, and the next pass republishes whatever was not recorded
// with the same EventIDs (dedup hands back the first ControlVersions).
func TestPump_ReadAheadCancel(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		db, _ := tdb.Open(t)
		for i := 1; i <= 20; i++ {
			appendCommitted(t, db, newEvent(i))
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		sink := &FakeSink{}
		sink.AppendFunc = func(_ context.Context, e controlevent.Event) (controlevent.Event, error) {
			if e.EventID == "evt-0010" {
				cancel()
			}
			return sink.Stamp(e)
		}
		p := newPump(t, db, sink, &outbox.Config{BatchSize: 3})
		n, err := p.Pass(ctx)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Pass = %d, %v; want context.Canceled", n, err)
		}
		if got := ids(sink.Feed()); !strings.HasSuffix(got, "evt-0010") {
			t.Fatalf("feed %s: nothing after evt-0010 may be published", got)
		}
		pub := published(t, db)
		if len(pub) != n || n > 10 {
			t.Fatalf("Pass reported %d rows, %d recorded: %v", n, len(pub), pub)
		}
		for id, cv := range pub {
			var i int
			fmt.Sscanf(id, "evt-%d", &i)
			if cv != uint64(i) {
				t.Errorf("%s recorded as %d, want %d", id, cv, i)
			}
		}
		if n, err := p.Pass(context.Background()); err != nil || n != 20-len(pub) {
			t.Fatalf("second Pass = %d, %v; want %d, nil", n, err, 20-len(pub))
		}
		pub = published(t, db)
		for i := 1; i <= 20; i++ {
			if id := fmt.Sprintf("evt-%04d", i); pub[id] != uint64(i) {
				t.Errorf("%s recorded as %d, want %d", id, pub[id], i)
			}
		}
		if got := len(sink.Feed()); got != 20 {
			t.Fatalf("%d events in the feed, want 20 (republishes are deduplicated)", got)
		}
	})
}
