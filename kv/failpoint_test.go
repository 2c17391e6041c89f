package kv_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/filestore"
	"github.com/controlfeed/controlfeed/internal/failpoint"
	"github.com/controlfeed/controlfeed/internal/failpoint/failpointtest"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
	"github.com/controlfeed/controlfeed/kv"
	"github.com/controlfeed/controlfeed/outbox"
)

// childDirEnv, when set, makes TestFailpointChild act as the child process
// of a kill test: it runs kv.Put("k", "hello") against dir/producer.db and
// the file store dir/store, with whatever CONTROLFEED_FAILPOINTS the parent
// set.
const childDirEnv = "KV_FAILPOINT_CHILD_DIR"

func TestFailpointChild(t *testing.T) {
	dir := os.Getenv(childDirEnv)
	if dir == "" {
		t.Skip("only runs as the child of a failpoint kill test")
	}
	ctx := context.Background()
	db, err := sqlitedb.Open(ctx, filepath.Join(dir, "producer.db"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := filestore.New(filepath.Join(dir, "store"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := kv.Put(ctx, db, st, "k", []byte("hello"))
	fmt.Printf(failpointtest.Survived+" Put = %s, %v\n", ev.EventID, err)
}

func TestFailpoint_KillDuringPut(t *testing.T) {
	for _, tc := range []struct {
		spec      string
		committed bool
	}{
		{failpoint.KVAfterArtifactBeforeCommit + "=exit", false},
		{failpoint.KVAfterCommit + "=exit", true},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			db, err := sqlitedb.Open(ctx, filepath.Join(dir, "producer.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if err := kv.Migrate(ctx, db); err != nil {
				t.Fatal(err)
			}
			if err := outbox.Migrate(ctx, db); err != nil {
				t.Fatal(err)
			}

			failpointtest.RunKilledChild(t, "TestFailpointChild", tc.spec, childDirEnv+"="+dir)

			_, found, err := kv.Get(ctx, db, "k")
			if err != nil {
				t.Fatal(err)
			}
			var events int
			if err := db.QueryRow(`SELECT COUNT(*) FROM controlfeed_outbox`).Scan(&events); err != nil {
				t.Fatal(err)
			}
			if tc.committed {
				// The row and its event survive together; the pump
				// will publish it.
				if p := pending(t, db); !found || len(p) != 1 || p[0].Key != "k" {
					t.Fatalf("row found %v, pending %+v; want both the row and its event", found, p)
				}
			} else if found || events != 0 {
				t.Fatalf("row found %v, %d outbox rows; want neither (the transaction never committed)", found, events)
			}

			// Either way the artifact was stored first: a harmless orphan
			// in the first case, the event's payload in the second.
			st, err := filestore.New(filepath.Join(dir, "store"), nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := artifact.GetBytes(ctx, st, artifact.RefOf([]byte("hello")), 1<<20)
			if err != nil || string(got) != "hello" {
				t.Fatalf("artifact = %q, %v; want it stored", got, err)
			}

			// The producer retries (or carries on) normally.
			if _, err := kv.Put(ctx, db, st, "k", []byte("hello")); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Injected errors: before commit nothing changes; after commit the change
// is made but the caller sees the error (a lost reply).
func TestFailpoint_PutErrors(t *testing.T) {
	ctx := context.Background()
	db, st := openProducer(t), newStore(t)
	if err := failpoint.Enable(failpoint.KVAfterArtifactBeforeCommit + "=1*error"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(failpoint.Disable)
	if _, err := kv.Put(ctx, db, st, "k", []byte("v1")); !errors.Is(err, failpoint.ErrInjected) || !strings.HasPrefix(err.Error(), `kv: put "k": `) {
		t.Fatalf("Put = %v; want the injected error", err)
	}
	if _, found, _ := kv.Get(ctx, db, "k"); found || len(pending(t, db)) != 0 {
		t.Fatal("a failed Put changed the database")
	}

	if err := failpoint.Enable(failpoint.KVAfterCommit + "=2*error"); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, db, st, "k", []byte("v1")); !errors.Is(err, failpoint.ErrInjected) {
		t.Fatalf("Put = %v; want the injected error", err)
	}
	if _, _, err := kv.Delete(ctx, db, "k"); !errors.Is(err, failpoint.ErrInjected) {
		t.Fatalf("Delete = %v; want the injected error", err)
	}
	if _, found, _ := kv.Get(ctx, db, "k"); found || len(pending(t, db)) != 2 {
		t.Fatalf("found %v, %d pending; want the Put and the Delete committed despite the errors", found, len(pending(t, db)))
	}
}
