package outbox_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/internal/failpoint"
	"github.com/controlfeed/controlfeed/outbox"
	"github.com/controlfeed/controlfeed/trust"
	"github.com/controlfeed/controlfeed/trust/trusttest"
)

// verifyChain checks what a node with keys trusted checks: every event of
// the feed is signed by one of them and follows the one before.
func verifyChain(t *testing.T, events []controlevent.Event, keys ...*trust.PrivateKey) trust.Head {
	t.Helper()
	kr := trusttest.Keyring(t, keys...)
	var head trust.Head
	for _, e := range events {
		v, err := kr.Verify(e)
		if err == nil {
			err = head.Check(e.EventID, v)
		}
		if err != nil {
			t.Fatalf("feed event %s: %v", e.EventID, err)
		}
		head = v.Head()
	}
	return head
}

func TestPump_Signs(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		for _, batch := range []bool{false, true} {
			t.Run(map[bool]string{false: "Append", true: "AppendBatch"}[batch], func(t *testing.T) {
				db, _ := tdb.Open(t)
				var sink feed.Sink
				var fake *FakeSink
				if batch {
					b := &FakeBatchSink{}
					sink, fake = b, &b.FakeSink
				} else {
					fake = &FakeSink{}
					sink = fake
				}
				k := trusttest.Key(t, 1)
				for i := 1; i <= 25; i++ {
					appendCommitted(t, db, newEvent(i))
				}
				p := newPump(t, db, sink, &outbox.Config{Signer: k, BatchSize: 10})
				if n, err := p.Pass(context.Background()); err != nil || n != 25 {
					t.Fatalf("Pass = %d, %v", n, err)
				}
				// A second pump (a restart) continues the chain.
				for i := 26; i <= 30; i++ {
					appendCommitted(t, db, newEvent(i))
				}
				p2 := newPump(t, db, sink, &outbox.Config{Signer: k})
				if n, err := p2.Pass(context.Background()); err != nil || n != 5 {
					t.Fatalf("second Pass = %d, %v", n, err)
				}
				if head := verifyChain(t, fake.Feed(), k); head.Seq != 30 {
					t.Fatalf("chain head seq %d, want 30", head.Seq)
				}
			})
		}
	})
}

// A crash after the broker accepted signed events and before the write-back:
// the next pump republishes them with the same bytes (ed25519 is
// deterministic), and a standby with ANOTHER key continues the same chain.
func TestPump_SignsAcrossCrashAndTakeover(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		k1, k2 := trusttest.Key(t, 1), trusttest.Key(t, 2)
		// crashed returns a database whose pump (key k1) published events
		// 1-4 into fake but recorded only 1 and 2.
		crashed := func(t *testing.T) (*FakeSink, func(*trust.PrivateKey) *outbox.Pump) {
			db, _ := tdb.Open(t)
			fake := &FakeSink{}
			appendCommitted(t, db, newEvent(1), newEvent(2))
			if n, err := newPump(t, db, fake, &outbox.Config{Signer: k1}).Pass(context.Background()); err != nil || n != 2 {
				t.Fatalf("Pass = %d, %v", n, err)
			}
			appendCommitted(t, db, newEvent(3), newEvent(4))
			enableFailpoints(t, failpoint.OutboxAfterPublishBeforeWriteback+"=1*error")
			if _, err := newPump(t, db, fake, &outbox.Config{Signer: k1}).Pass(context.Background()); !errors.Is(err, failpoint.ErrInjected) {
				t.Fatalf("Pass = %v, want the injected crash", err)
			}
			failpoint.Disable()
			appendCommitted(t, db, newEvent(5))
			return fake, func(k *trust.PrivateKey) *outbox.Pump { return newPump(t, db, fake, &outbox.Config{Signer: k}) }
		}
		t.Run("SameKeySameBytes", func(t *testing.T) {
			fake, pump := crashed(t)
			if _, err := pump(k1).Pass(context.Background()); err != nil {
				t.Fatal(err)
			}
			calls := fake.Calls()
			if got := ids(calls); got != "evt-0001,evt-0002,evt-0003,evt-0004,evt-0003,evt-0004,evt-0005" {
				t.Fatalf("calls %s", got)
			}
			for i := 2; i < 4; i++ {
				if calls[i].Extra != calls[i+2].Extra {
					t.Fatalf("republished %s with other bytes:\n%s\n%s", calls[i].EventID, calls[i].Extra, calls[i+2].Extra)
				}
			}
			if head := verifyChain(t, fake.Feed(), k1); head.Seq != 5 {
				t.Fatalf("chain head %d", head.Seq)
			}
		})
		t.Run("StandbyWithOtherKey", func(t *testing.T) {
			fake, pump := crashed(t)
			if _, err := pump(k2).Pass(context.Background()); err != nil {
				t.Fatal(err)
			}
			// The feed holds 1-4 by k1 (k2's republish of 3 and 4 was
			// deduplicated) and 5 by k2: one chain.
			feedEvents := fake.Feed()
			if got := ids(feedEvents); got != "evt-0001,evt-0002,evt-0003,evt-0004,evt-0005" {
				t.Fatalf("feed %s", got)
			}
			if !strings.Contains(feedEvents[3].Extra, k1.ID()) || !strings.Contains(feedEvents[4].Extra, k2.ID()) {
				t.Fatalf("signers: %s / %s", feedEvents[3].Extra, feedEvents[4].Extra)
			}
			if head := verifyChain(t, feedEvents, k1, k2); head.Seq != 5 {
				t.Fatalf("chain head %d", head.Seq)
			}
		})
	})
}

// A row whose extra members leave no room for the signature is marked dead
// (with the reason), not retried forever, and the rows after it publish.
func TestPump_SignFailureMarksDead(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		db, _ := tdb.Open(t)
		fake := &FakeSink{}
		big := newEvent(2)
		x, err := controlevent.EncodeExtra(map[string]any{"blob": strings.Repeat("x", controlevent.MaxExtraLen-20)})
		if err != nil {
			t.Fatal(err)
		}
		big.Extra = x
		appendCommitted(t, db, newEvent(1), big, newEvent(3))
		p := newPump(t, db, fake, &outbox.Config{Signer: trusttest.Key(t, 1)})
		ctx := context.Background()
		for range 3 {
			p.Pass(ctx)
		}
		if got := ids(fake.Feed()); got != "evt-0001,evt-0003" {
			t.Fatalf("feed %s", got)
		}
		dead, err := outbox.ListDead(ctx, db, 10)
		if err != nil || len(dead) != 1 || dead[0].Event.EventID != "evt-0002" || !strings.Contains(dead[0].DeadReason, "cannot be signed") {
			t.Fatalf("dead rows %+v, %v", dead, err)
		}
		verifyChain(t, fake.Feed(), trusttest.Key(t, 1))
	})
}
