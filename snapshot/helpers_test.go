package snapshot_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/filestore"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
	"github.com/controlfeed/controlfeed/kv"
	"github.com/controlfeed/controlfeed/outbox"
	"github.com/controlfeed/controlfeed/trust"
)

// fakeSource serves the events published so far, densely numbered.
type fakeSource struct {
	mu     sync.Mutex
	events []controlevent.Event
}

var _ feed.Source = (*fakeSource)(nil)

func (s *fakeSource) Name() string { return "fake" }

func (s *fakeSource) Poll(_ context.Context, since uint64) ([]controlevent.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []controlevent.Event
	for _, e := range s.events {
		if e.ControlVersion > since {
			out = append(out, e)
		}
	}
	return out, nil
}

// add stamps evs with the next dense control versions and publishes them.
func (s *fakeSource) add(evs ...controlevent.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range evs {
		e.ControlVersion = uint64(len(s.events) + 1)
		s.events = append(s.events, e)
	}
}

// fleet is a producer database, its artifact store, a feed and one node.
type fleet struct {
	t       testing.TB
	store   artifact.Store
	prod    *sql.DB
	src     *fakeSource
	node    *sql.DB
	nodeDir string
	app     *applier.Applier
	seq     int
	key     *trust.PrivateKey // signs published events when set (newSignedFleet)
	head    trust.Head        // the producer's chain head
}

func newStore(t testing.TB) artifact.Store {
	t.Helper()
	st, err := filestore.New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// openNode opens (creating) a node database at path with the applier's and
// kv's tables.
func openNode(t testing.TB, path string) *sql.DB {
	t.Helper()
	ctx := context.Background()
	db, err := sqlitedb.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := applier.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := kv.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	return db
}

func newFleet(t testing.TB, store artifact.Store) *fleet {
	t.Helper()
	ctx := context.Background()
	f := &fleet{t: t, store: store, src: &fakeSource{}, nodeDir: t.TempDir()}
	var err error
	if f.prod, err = sqlitedb.Open(ctx, filepath.Join(t.TempDir(), "producer.db")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.prod.Close() })
	if err := kv.Migrate(ctx, f.prod); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Migrate(ctx, f.prod); err != nil {
		t.Fatal(err)
	}
	f.node = openNode(t, filepath.Join(f.nodeDir, "node.db"))
	if f.app, err = applier.New(f.node, f.src, store, &applier.Config{Handlers: kv.Handlers(), MaxBatch: 16}); err != nil {
		t.Fatal(err)
	}
	return f
}

// publish makes n kv changes on the producer (puts, some deletes) and
// publishes their events to the feed, without applying them.
func (f *fleet) publish(n int) {
	f.t.Helper()
	ctx := context.Background()
	for range n {
		f.seq++
		key := fmt.Sprintf("k%03d", f.seq%37)
		deleted, err := false, error(nil)
		if f.seq%11 == 0 {
			_, deleted, err = kv.Delete(ctx, f.prod, key)
		}
		if err == nil && !deleted { // one event per change, always
			_, err = kv.Put(ctx, f.prod, f.store, key, fmt.Appendf(nil, "value %d", f.seq))
		}
		if err != nil {
			f.t.Fatal(err)
		}
	}
	rows, err := outbox.ListPending(ctx, f.prod, 1<<20)
	if err != nil {
		f.t.Fatal(err)
	}
	var evs []controlevent.Event
	for _, r := range rows {
		e := r.Event
		if f.key != nil {
			if e, f.head, err = trust.Sign(f.key, e, f.head); err != nil {
				f.t.Fatal(err)
			}
		}
		evs = append(evs, e)
	}
	// Mark them published so the next publish does not repeat them.
	if _, err := f.prod.ExecContext(ctx, `UPDATE controlfeed_outbox SET published_control_version = id, published_at = 'x' WHERE published_control_version IS NULL`); err != nil {
		f.t.Fatal(err)
	}
	f.src.add(evs...)
}

// catchUp applies everything published.
func (f *fleet) catchUp() {
	f.t.Helper()
	for {
		n, err := f.app.Step(context.Background())
		if err != nil {
			f.t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
}

func digest(t testing.TB, db *sql.DB) string {
	t.Helper()
	d, err := kv.Digest(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func cursor(t testing.TB, db *sql.DB) uint64 {
	t.Helper()
	c, err := applier.ReadCursor(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// openRestored opens a restored database the way a node does and returns
// its digest and cursor.
func openRestored(t testing.TB, path string) (string, uint64) {
	t.Helper()
	db, err := sqlitedb.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var qc string
	if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&qc); err != nil || qc != "ok" {
		t.Fatalf("restored %s: integrity_check = %q, %v", path, qc, err)
	}
	return digest(t, db), cursor(t, db)
}

func newApplier(t testing.TB, db *sql.DB, src feed.Source, store artifact.Store) *applier.Applier {
	t.Helper()
	a, err := applier.New(db, src, store, &applier.Config{Handlers: kv.Handlers(), MaxBatch: 16})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func newApplierOn(t testing.TB, db *sql.DB, f *fleet) *applier.Applier {
	return newApplier(t, db, f.src, f.store)
}

// openRaw opens a database with the plain driver (no WAL switch).
func openRaw(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
