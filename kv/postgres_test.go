package kv_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"

	"github.com/controlfeed/controlfeed/internal/pgtest"
	"github.com/controlfeed/controlfeed/kv"
	"github.com/controlfeed/controlfeed/outbox"
)

// openPostgresProducer is openProducer on a fresh PostgreSQL schema.
func openPostgresProducer(t *testing.T) *sql.DB {
	t.Helper()
	ctx := context.Background()
	db := pgtest.Open(t, pgtest.NewSchema(t))
	for range 2 { // idempotent
		if err := kv.Migrate(ctx, db); err != nil {
			t.Fatal(err)
		}
	}
	if err := outbox.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestPostgres_Replication: a producer on PostgreSQL and a SQLite node end
// with equal tables (digests), keys in byte order on both.
func TestPostgres_Replication(t *testing.T) { testReplication(t, openPostgresProducer(t)) }

// TestPostgres_ConcurrentPutsOneKey: concurrent Puts of one key on
// PostgreSQL get successive versions, each appended to the outbox in version
// order (the row lock orders them), and Get and Delete see the last.
func TestPostgres_ConcurrentPutsOneKey(t *testing.T) {
	ctx := context.Background()
	db, st := openPostgresProducer(t), newStore(t)
	const writers, each = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := kv.Put(ctx, db, st, "hot", fmt.Appendf(nil, "w%d-%d", w, i)); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	p := pending(t, db)
	if len(p) != writers*each {
		t.Fatalf("%d outbox rows, want %d", len(p), writers*each)
	}
	for i, e := range p {
		if e.Version != int64(i+1) || e.BaseVersion != int64(i) {
			t.Fatalf("outbox row %d has version %d (base %d), want %d: events are not in version order", i, e.Version, e.BaseVersion, i+1)
		}
	}
	e, ok, err := kv.Get(ctx, db, "hot")
	if err != nil || !ok || e.Version != writers*each {
		t.Fatalf("Get = %+v, %v, %v", e, ok, err)
	}
	ev, existed, err := kv.Delete(ctx, db, "hot")
	if err != nil || !existed || ev.BaseVersion != writers*each || ev.Version != writers*each+1 {
		t.Fatalf("Delete = %+v, %v, %v", ev, existed, err)
	}
	if _, existed, err := kv.Delete(ctx, db, "hot"); err != nil || existed {
		t.Fatalf("second Delete: existed %v, %v", existed, err)
	}
	if ev, err := kv.Put(ctx, db, st, "hot", []byte("again")); err != nil || ev.Version != 1 {
		t.Fatalf("Put after Delete = %+v, %v (want version 1)", ev, err)
	}
}
