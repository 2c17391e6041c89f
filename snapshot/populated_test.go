package snapshot_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/controlfeed/controlfeed/dbrole"
	"github.com/controlfeed/controlfeed/kv"
	"github.com/controlfeed/controlfeed/outbox"
	"github.com/controlfeed/controlfeed/snapshot"
)

// A database at cursor 0 without applied events is not necessarily new: a
// producer's database (role, outbox rows) or one with key/value rows
// written locally holds state that a restore would lose. Each is refused
// without Force.
func TestRestore_PopulatedAtCursorZero(t *testing.T) {
	ctx := context.Background()
	store := newStore(t)
	f := newFleet(t, store)
	f.publish(5)
	f.catchUp()
	m, err := snapshot.Create(ctx, f.node, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cases := map[string]func(path string){
		"producer role": func(path string) {
			db := openNode(t, path)
			if err := dbrole.Record(ctx, db, dbrole.Producer); err != nil {
				t.Fatal(err)
			}
			db.Close()
		},
		"outbox rows": func(path string) {
			db := openNode(t, path)
			if err := outbox.Migrate(ctx, db); err != nil {
				t.Fatal(err)
			}
			if _, err := kv.Put(ctx, db, store, "k", []byte("v")); err != nil {
				t.Fatal(err)
			}
			db.Exec(`DELETE FROM controlfeed_kv`)
			db.Close()
		},
		"kv rows": func(path string) {
			db := openNode(t, path)
			if _, err := db.Exec(`INSERT INTO controlfeed_kv (key, value, version, updated_at) VALUES ('k', x'00', 1, 'x')`); err != nil {
				t.Fatal(err)
			}
			db.Close()
		},
	}
	for name, make := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".db")
			make(path)
			err := snapshot.Restore(ctx, store, m, path, nil)
			if !errors.Is(err, snapshot.ErrPopulated) || !strings.Contains(err.Error(), "not a new node database") {
				t.Fatalf("Restore onto a database with %s = %v, want ErrPopulated", name, err)
			}
			if err := snapshot.Restore(ctx, store, m, path, &snapshot.RestoreOptions{Force: true}); err != nil {
				t.Fatalf("forced: %v", err)
			}
		})
	}
}
