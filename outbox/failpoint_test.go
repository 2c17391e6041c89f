package outbox_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/internal/failpoint"
	"github.com/controlfeed/controlfeed/outbox"
)

func enableFailpoints(t *testing.T, spec string) {
	t.Helper()
	if err := failpoint.Enable(spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(failpoint.Disable)
}

// A write-back lost after the Sink accepted the rows (the crash window the
// point marks) leaves them pending; the next pass republishes them with the
// same EventIDs and the Sink's dedup hands back the original versions.
func TestFailpoint_AfterPublishBeforeWriteback(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		for _, batch := range []bool{false, true} {
			name := "Append"
			if batch {
				name = "AppendBatch"
			}
			t.Run(name, func(t *testing.T) {
				db, _ := tdb.Open(t)
				appendCommitted(t, db, newEvent(1), newEvent(2))
				var sink feed.Sink
				var fake *FakeSink
				if batch {
					b := &FakeBatchSink{}
					sink, fake = b, &b.FakeSink
				} else {
					fake = &FakeSink{}
					sink = fake
				}
				enableFailpoints(t, failpoint.OutboxAfterPublishBeforeWriteback+"=1*error")
				p := newPump(t, db, sink, nil)

				n, err := p.Pass(context.Background())
				if !errors.Is(err, failpoint.ErrInjected) || n != 0 {
					t.Fatalf("Pass = %d, %v; want 0 and the injected error", n, err)
				}
				if !strings.HasPrefix(err.Error(), "outbox: write back 2 published rows: ") {
					t.Fatalf("error %q does not say what failed", err)
				}
				if got := ids(fake.Feed()); got != "evt-0001,evt-0002" {
					t.Fatalf("feed %s: the Sink should have accepted both rows", got)
				}
				if rows := pending(t, db); len(rows) != 2 {
					t.Fatalf("pending %d rows, want both (the write-back never ran)", len(rows))
				}
				if pub := published(t, db); len(pub) != 0 {
					t.Fatalf("published %v, want none recorded", pub)
				}
				if st := p.Stats(); st.Failures == 0 || !strings.Contains(st.LastError, "injected failure") {
					t.Fatalf("Stats %+v do not show the failure", st)
				}

				if n, err := p.Pass(context.Background()); err != nil || n != 2 {
					t.Fatalf("second Pass = %d, %v; want 2, nil", n, err)
				}
				if got, want := ids(fake.Calls()), "evt-0001,evt-0002,evt-0001,evt-0002"; got != want {
					t.Fatalf("sink calls %s, want %s (republished with the same EventIDs)", got, want)
				}
				if got := ids(fake.Feed()); got != "evt-0001,evt-0002" {
					t.Fatalf("feed %s: dedup should absorb the republish", got)
				}
				if pub := published(t, db); len(pub) != 2 || pub["evt-0001"] != 1 || pub["evt-0002"] != 2 {
					t.Fatalf("published %v, want the original versions evt-0001=1 evt-0002=2", pub)
				}
				if rows := pending(t, db); len(rows) != 0 {
					t.Fatalf("%d rows still pending", len(rows))
				}
			})
		}
	})
}

// An error before the Sink is called is an ordinary failed publish: the row
// stays pending with its bookkeeping, later rows do not overtake it, and the
// next pass publishes in order.
func TestFailpoint_BeforePublish(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		db, _ := tdb.Open(t)
		appendCommitted(t, db, newEvent(1), newEvent(2))
		sink := &FakeSink{}
		enableFailpoints(t, failpoint.OutboxBeforePublish+"=1*enospc")
		p := newPump(t, db, sink, nil)
		if n, err := p.Pass(context.Background()); !errors.Is(err, failpoint.ErrInjected) || n != 0 {
			t.Fatalf("Pass = %d, %v; want 0 and the injected error", n, err)
		}
		if calls := sink.Calls(); len(calls) != 0 {
			t.Fatalf("the Sink was called: %s", ids(calls))
		}
		rows := pending(t, db)
		if len(rows) != 2 || rows[0].AttemptCount != 1 || !strings.Contains(rows[0].LastError, "no space left on device") || rows[1].AttemptCount != 0 {
			t.Fatalf("pending %+v; want evt-0001 with one failed attempt, evt-0002 untouched", rows)
		}
		if n, err := p.Pass(context.Background()); err != nil || n != 2 {
			t.Fatalf("second Pass = %d, %v; want 2, nil", n, err)
		}
		if pub := published(t, db); pub["evt-0001"] != 1 || pub["evt-0002"] != 2 {
			t.Fatalf("published %v", pub)
		}
	})
}
