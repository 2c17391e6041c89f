package node_test

import (
	"crypto/sha256"
	"database/sql"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
)

// dirDigest maps every file of dir to the sha256 of its bytes.
func dirDigest(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][32]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		got[e.Name()] = sha256.Sum256(b)
	}
	return got
}

func journalMode(t *testing.T, db *sql.DB) string {
	t.Helper()
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	return mode
}

// OpenDBReadOnly reads a controlfeed database and writes no file; it
// refuses another program's database, leaving it byte-identical and in its
// rollback-journal mode, and never creates a missing one.
func TestOpenDBReadOnly(t *testing.T) {
	ctx := t.Context()
	t.Run("OK", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "node.db")
		db, err := node.OpenDB(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		db.Close()
		before := dirDigest(t, dir)
		ro, err := node.OpenDBReadOnly(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := node.ReadStatus(ctx, ro); err != nil {
			t.Fatal(err)
		}
		if _, err := ro.Exec(`CREATE TABLE x (a)`); err == nil {
			t.Error("a statement wrote through the read-only handle")
		}
		if m := journalMode(t, ro); m != "wal" {
			t.Errorf("journal mode %q, want wal", m)
		}
		ro.Close()
		// SQLite's reader of a WAL database creates the -shm index and an
		// empty -wal if they are missing, and a read-only connection cannot
		// remove them: they may appear; nothing else may change.
		after := dirDigest(t, dir)
		if after["node.db"] != before["node.db"] {
			t.Error("reading changed the database file")
		}
		if w, ok := after["node.db-wal"]; ok && w != sha256.Sum256(nil) {
			t.Error("reading wrote to the WAL")
		}
		delete(after, "node.db-wal")
		delete(after, "node.db-shm")
		if !maps.Equal(before, after) {
			t.Errorf("reading changed the directory: %d files before, %d after (without the WAL sidecars)", len(before), len(after))
		}
	})
	t.Run("ErrNotControlfeed", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "other.db")
		other, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(DELETE)")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := other.Exec(`CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO accounts VALUES (1, 'a')`); err != nil {
			t.Fatal(err)
		}
		other.Close()
		before := dirDigest(t, dir)
		_, err = node.OpenDBReadOnly(ctx, path)
		if !errors.Is(err, node.ErrNotControlfeed) || !strings.Contains(err.Error(), "not a controlfeed database: "+path) {
			t.Fatalf("OpenDBReadOnly on another program's database: %v", err)
		}
		if after := dirDigest(t, dir); !maps.Equal(before, after) {
			t.Errorf("refusing changed the directory: %d files before, %d after", len(before), len(after))
		}
		ro, err := sqlitedb.OpenReadOnly(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer ro.Close()
		if m := journalMode(t, ro); m != "delete" {
			t.Errorf("journal mode %q after the refusal, want delete", m)
		}
	})
	t.Run("SchemaIncomplete", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "partial.db")
		db, err := sqlitedb.Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		if err := applier.Migrate(ctx, db); err != nil {
			t.Fatal(err)
		}
		db.Close()
		_, err = node.OpenDBReadOnly(ctx, path)
		if err == nil || !strings.Contains(err.Error(), "outbox schema is at version 0") || !strings.Contains(err.Error(), "serve") {
			t.Fatalf("OpenDBReadOnly on a database without the outbox schema: %v", err)
		}
	})
	t.Run("Missing", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "missing.db")
		if _, err := node.OpenDBReadOnly(ctx, path); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("OpenDBReadOnly on a missing file: %v, want fs.ErrNotExist", err)
		}
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("OpenDBReadOnly created %s: %v", path, err)
		}
	})
}
