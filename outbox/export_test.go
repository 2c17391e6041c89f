package outbox

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/internal/pgtest"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
)

// DecodePayload exposes the pump's payload decoding to the fuzz test.
var DecodePayload = decodePayload

func TestDialectMigrationsMatchSchemaVersion(t *testing.T) {
	for _, dia := range []*dialect{&sqlite, &postgres} {
		if got := len(dia.migrations); got != SchemaVersion {
			t.Fatalf("dialect %s has %d migrations, SchemaVersion is %d", dia.name, got, SchemaVersion)
		}
	}
}

func TestBackoff(t *testing.T) {
	p := &Pump{cfg: Config{MinBackoff: 100, MaxBackoff: 1000}}
	for n := 1; n < 80; n++ {
		want := time.Duration(min(100<<min(n-1, 20), 1000))
		d := p.backoff(n)
		if d < want/2 || d > want {
			t.Errorf("backoff(%d) = %v, want within [%v, %v]", n, d, want/2, want)
		}
	}
}

// SetSyncFile replaces the pump's fsync step for one test.
func SetSyncFile(t testing.TB, f func(real func(string) error, path string) error) {
	real := syncFile
	syncFile = func(path string) error { return f(real, path) }
	t.Cleanup(func() { syncFile = real })
}

// TestDB is one dialect of the outbox suite: every test that is not about a
// SQLite-only mechanism (its WAL fsync, VACUUM INTO images) runs once per
// TestDB through ForEachDB.
type TestDB struct {
	// Name is the dialect's name, the subtest's name.
	Name string
	// New creates a new, empty database (not migrated) and returns a
	// function that opens a pool on it, closed when its t ends; each call
	// is another pool (another process's connections).
	New func(t testing.TB) func(testing.TB) *sql.DB
}

// Open returns a new, migrated, empty outbox database, closed when t ends,
// and a function that opens another pool on the same database.
func (d TestDB) Open(t testing.TB) (*sql.DB, func(testing.TB) *sql.DB) {
	t.Helper()
	reopen := d.New(t)
	db := reopen(t)
	if err := Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return db, reopen
}

// TestDBs are the dialects the suite runs on. PostgreSQL's needs
// CONTROLFEED_TEST_POSTGRES_URL (package pgtest): without it its subtests
// skip, or fail under CI=true.
var TestDBs = []TestDB{
	{Name: "sqlite", New: func(t testing.TB) func(testing.TB) *sql.DB {
		path := filepath.Join(t.TempDir(), "producer.db")
		return func(t testing.TB) *sql.DB {
			t.Helper()
			db, err := sqlitedb.Open(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		}
	}},
	{Name: "postgres", New: func(t testing.TB) func(testing.TB) *sql.DB {
		url := pgtest.NewSchema(t)
		return func(t testing.TB) *sql.DB { t.Helper(); return pgtest.Open(t, url) }
	}},
}

// ForEachDB runs f as a subtest per dialect of TestDBs.
func ForEachDB(t *testing.T, f func(t *testing.T, tdb TestDB)) {
	t.Helper()
	for _, tdb := range TestDBs {
		t.Run(tdb.Name, func(t *testing.T) { f(t, tdb) })
	}
}

// OpenEach opens a fresh migrated database per dialect and runs f on it as
// a subtest.
func OpenEach(t *testing.T, f func(t *testing.T, db *sql.DB)) {
	t.Helper()
	ForEachDB(t, func(t *testing.T, tdb TestDB) {
		db, _ := tdb.Open(t)
		f(t, db)
	})
}

// DialectName returns the name of db's dialect ("sqlite", "postgres").
func DialectName(db *sql.DB) string { return dialectOf(db).name }
