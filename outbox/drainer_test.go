package outbox_test

import (
	"context"
	"database/sql"
	"sync"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/outbox"
)

// TestPump_OneDrainerTakeover: on PostgreSQL two pumps in two "processes"
// (pools) share an outbox while a producer keeps appending. Exactly one
// publishes; the other stands by. When the holder's lock session is
// terminated (pg_terminate_backend, as an operator or a failover would) the
// holder stops and the standby takes over; when the new holder stops
// cleanly the first takes over again. The feed (one fake broker with Msg-Id
// dedup for both) ends with every event once, in outbox order. The
// takeover times are logged, not asserted.
func TestPump_OneDrainerTakeover(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		if tdb.Name != "postgres" {
			t.Skip("the drainer lock is PostgreSQL's; on SQLite the daemon's pump lock file serves")
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		db, reopen := tdb.Open(t)
		dbA, dbB := reopen(t), reopen(t)
		sink := &FakeBatchSink{} // the broker both pumps publish to
		// The holder gives up its lock when a confirmation takes longer
		// than the interval; at 100ms a loaded machine (the chaos suite
		// beside it) made A drop the lock by itself before the test
		// terminated its session, which then found no holder.
		cfg := &outbox.Config{PollInterval: 5 * time.Millisecond, DrainerLockInterval: 500 * time.Millisecond,
			MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond}
		pa, pb := newPump(t, dbA, sink, cfg), newPump(t, dbB, sink, cfg)

		// The producer.
		prodCtx, stopProd := context.WithCancel(ctx)
		var prod sync.WaitGroup
		appended := 0
		var prodErr error
		prod.Go(func() {
			for i := 1; prodCtx.Err() == nil; i++ {
				tx, err := db.BeginTx(ctx, nil)
				if err == nil {
					err = outbox.Append(ctx, tx, newEvent(i))
					if err == nil {
						err = tx.Commit()
					} else {
						tx.Rollback()
					}
				}
				if err != nil {
					prodErr = err
					return
				}
				appended = i
				time.Sleep(2 * time.Millisecond)
			}
		})

		run := func(p *outbox.Pump) (stop func()) {
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- p.Run(rctx) }()
			return func() {
				cancel()
				if err := recv(t, done, "Run to return"); err != nil {
					t.Error(err)
				}
			}
		}
		holds := func(p *outbox.Pump, n uint64) func() bool {
			return func() bool { s := p.Stats(); return !s.Standby && s.Takeovers == n }
		}
		stands := func(p *outbox.Pump) func() bool { return func() bool { return p.Stats().Standby } }

		stopA := run(pa)
		waitFor(t, "pump A to take the drainer lock", holds(pa, 1))
		stopB := run(pb)
		waitFor(t, "pump B to stand by", stands(pb))
		time.Sleep(100 * time.Millisecond)
		if pb.Stats().Published != 0 {
			t.Fatalf("standby pump B published %d rows", pb.Stats().Published)
		}

		// Terminate A's lock session.
		start := time.Now()
		terminateDrainer(t, db)
		waitFor(t, "pump B to take over", holds(pb, 1))
		took := time.Since(start)
		waitFor(t, "pump A to stand by", stands(pa))
		lostAt := pa.Stats().Published
		t.Logf("takeover after pg_terminate_backend of the holder's lock session: %v", took)

		time.Sleep(200 * time.Millisecond)
		if got := pa.Stats().Published; got != lostAt {
			t.Fatalf("pump A published %d rows while standing by", got-lostAt)
		}

		// B stops cleanly: A takes over.
		start = time.Now()
		stopB()
		waitFor(t, "pump A to take over again", holds(pa, 2))
		t.Logf("takeover after the holder's clean stop: %v", time.Since(start))

		stopProd()
		prod.Wait()
		if prodErr != nil {
			t.Fatal(prodErr)
		}
		waitFor(t, "the outbox to drain", func() bool { return readCounts(t, db).Pending == 0 })
		stopA()

		feed := sink.Feed()
		if len(feed) != appended {
			t.Fatalf("feed has %d events, %d were appended", len(feed), appended)
		}
		for i, e := range feed {
			if want := newEvent(i + 1).EventID; e.EventID != want {
				t.Fatalf("feed[%d] = %s, want %s: not in outbox order", i, e.EventID, want)
			}
		}
		t.Logf("%d events, each once and in order; pump A published %d, pump B %d", len(feed), pa.Stats().Published, pb.Stats().Published)
	})
}

// terminateDrainer ends the session holding db's drainer lock.
func terminateDrainer(t *testing.T, db *sql.DB) {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT COUNT(pg_terminate_backend(pid)) FROM pg_locks
		WHERE locktype = 'advisory' AND classid = 1668247157 AND objid = 'controlfeed_outbox'::regclass::oid AND objsubid = 2 AND granted`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d sessions hold the drainer lock, want 1", n)
	}
}

// waitFor polls cond until it holds; the deadline is a deadlock guard.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hang)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("stuck waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
