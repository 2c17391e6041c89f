//go:build unix

package snapshot_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/artifact/filestore"
	"github.com/controlfeed/controlfeed/internal/failpoint"
	"github.com/controlfeed/controlfeed/internal/failpoint/failpointtest"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
	"github.com/controlfeed/controlfeed/snapshot"
	"github.com/controlfeed/controlfeed/snapshot/filecatalog"
)

// createChildDirEnv, when set, makes TestCreateChild act as the child of a
// kill test: a periodic snapshotter takes and publishes one snapshot of
// the node database dir/node.db into the file store dir/store and the
// file catalog of dir/feed, under the parent's CONTROLFEED_FAILPOINTS.
const createChildDirEnv = "SNAPSHOT_FAILPOINT_CREATE_CHILD_DIR"

func TestCreateChild(t *testing.T) {
	dir := os.Getenv(createChildDirEnv)
	if dir == "" {
		t.Skip("only runs as the child of a failpoint kill test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := sqlitedb.Open(ctx, filepath.Join(dir, "node.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, err := filestore.New(filepath.Join(dir, "store"), nil)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := filecatalog.New(filepath.Join(dir, "feed"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := snapshot.NewPeriodic(&snapshot.PeriodicConfig{DB: db, Store: st, Catalog: cat, Every: 1, Keep: 1,
		CheckInterval: 10 * time.Millisecond, Create: snapshot.CreateOptions{TempDir: dir}})
	if err != nil {
		t.Fatal(err)
	}
	go p.Run(ctx)
	for p.Status().Created == 0 && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Printf(failpointtest.Survived+" periodic snapshot = %+v\n", p.Status())
}

// A kill -9 at each failure point of taking and publishing a snapshot
// leaves the node database valid and unchanged, the catalog at its
// previous latest (no half-published entry: every record restores), and a
// retry publishes a snapshot that restores to the node's state.
func TestFailpoint_KillDuringCreate(t *testing.T) {
	ctx := context.Background()
	for _, point := range []string{failpoint.SnapshotCreateAfterCopy, failpoint.SnapshotCreateMidStore,
		failpoint.SnapshotCreateBeforeManifest, failpoint.SnapshotPublishBeforeCatalog} {
		t.Run(point, func(t *testing.T) {
			dir := t.TempDir()
			store, err := filestore.New(filepath.Join(dir, "store"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(filepath.Join(dir, "feed"), 0o755); err != nil {
				t.Fatal(err)
			}
			cat, err := filecatalog.New(filepath.Join(dir, "feed"))
			if err != nil {
				t.Fatal(err)
			}
			f := newFleet(t, store)
			f.publish(20)
			f.catchUp()
			prev, err := snapshot.Create(ctx, f.node, store, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := cat.Publish(ctx, snapshot.RecordOf(prev, time.Now())); err != nil {
				t.Fatal(err)
			}
			f.publish(40)
			f.catchUp()
			wantDigest, wantCursor := digest(t, f.node), cursor(t, f.node)
			// The child snapshots the node's database file while this
			// process keeps it open, as a running node would.
			if err := os.Link(filepath.Join(f.nodeDir, "node.db"), filepath.Join(dir, "node.db")); err != nil {
				t.Fatal(err)
			}
			for _, sfx := range []string{"-wal", "-shm"} {
				if err := os.Link(filepath.Join(f.nodeDir, "node.db"+sfx), filepath.Join(dir, "node.db"+sfx)); err != nil && !errors.Is(err, os.ErrNotExist) {
					t.Fatal(err)
				}
			}

			failpointtest.RunKilledChild(t, "TestCreateChild", point+"=kill", createChildDirEnv+"="+dir)

			var qc string
			if err := f.node.QueryRow(`PRAGMA integrity_check`).Scan(&qc); err != nil || qc != "ok" {
				t.Fatalf("node database after a kill at %s: integrity_check %q, %v", point, qc, err)
			}
			if d, c := digest(t, f.node), cursor(t, f.node); d != wantDigest || c != wantCursor {
				t.Fatalf("node database changed by a killed snapshot: digest %s cursor %d, want %s %d", d, c, wantDigest, wantCursor)
			}
			latest, err := cat.Latest(ctx)
			if err != nil || latest.Manifest != prev.Ref {
				t.Fatalf("catalog latest after a kill at %s = %+v, %v; want the previous %s", point, latest, err, prev.Ref)
			}
			rs, err := cat.List(ctx)
			if err != nil || len(rs) != 1 {
				t.Fatalf("catalog history after a kill = %+v, %v; want only the previous record", rs, err)
			}
			if _, err := snapshot.RestoreRef(ctx, store, latest.Manifest, filepath.Join(t.TempDir(), "r.db"), nil); err != nil {
				t.Fatalf("the catalog's latest no longer restores: %v", err)
			}
			if leftovers, _ := filepath.Glob(filepath.Join(dir, "controlfeed-snapshot-*")); point == failpoint.SnapshotCreateAfterCopy && len(leftovers) == 0 {
				t.Logf("no temporary directory left by a kill after the copy (expected one)")
			}

			// A retry (this process, no failure point) publishes a
			// snapshot that restores to the node's state.
			p, err := snapshot.NewPeriodic(&snapshot.PeriodicConfig{DB: f.node, Store: store, Catalog: cat, Every: 1, Keep: 1, CheckInterval: 5 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { defer close(done); p.Run(rctx) }()
			waitFor(t, func() bool { st := p.Status(); return st.Created == 1 && st.Pruned == 1 }) // published, then the previous one collected
			cancel()
			<-done
			latest, err = cat.Latest(ctx)
			if err != nil || latest.ControlVersion != wantCursor {
				t.Fatalf("latest after the retry = %+v, %v; want cursor %d", latest, err, wantCursor)
			}
			target := filepath.Join(t.TempDir(), "r.db")
			if _, err := snapshot.RestoreRef(ctx, store, latest.Manifest, target, nil); err != nil {
				t.Fatal(err)
			}
			if d, c := openRestored(t, target); d != wantDigest || c != wantCursor {
				t.Fatalf("restored retry: digest %s cursor %d, want %s %d", d, c, wantDigest, wantCursor)
			}
			if _, err := snapshot.Load(ctx, store, prev.Ref); !strings.Contains(fmt.Sprint(err), "not found") {
				t.Errorf("the previous snapshot was not collected with keep 1: Load = %v", err)
			}
		})
	}
}

// Injected errors at Create's points fail Create with the point named and
// change nothing in the node database.
func TestFailpoint_CreateErrors(t *testing.T) {
	ctx := context.Background()
	store := newStore(t)
	f := newFleet(t, store)
	f.publish(20)
	f.catchUp()
	want := digest(t, f.node)
	t.Cleanup(failpoint.Disable)
	for _, point := range []string{failpoint.SnapshotCreateAfterCopy, failpoint.SnapshotCreateMidStore, failpoint.SnapshotCreateBeforeManifest} {
		tmp := t.TempDir()
		if err := failpoint.Enable(point + "=1*error"); err != nil {
			t.Fatal(err)
		}
		_, err := snapshot.Create(ctx, f.node, store, &snapshot.CreateOptions{TempDir: tmp})
		if !errors.Is(err, failpoint.ErrInjected) || !strings.HasPrefix(err.Error(), "snapshot: create: ") {
			t.Fatalf("%s: Create = %v, want the injected error", point, err)
		}
		if left, _ := os.ReadDir(tmp); len(left) != 0 {
			t.Errorf("%s: temporary files left after an error: %v", point, left)
		}
		if d := digest(t, f.node); d != want {
			t.Fatalf("%s: node database changed", point)
		}
	}
}
