//go:build unix

package snapshot_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/controlfeed/controlfeed/artifact/filestore"
	"github.com/controlfeed/controlfeed/internal/failpoint"
	"github.com/controlfeed/controlfeed/internal/failpoint/failpointtest"
	"github.com/controlfeed/controlfeed/snapshot"
)

// childDirEnv, when set, makes TestRestoreChild act as the child process of
// a kill test: it restores the snapshot whose manifest reference is in
// dir/manifest.ref from the file store dir/store onto dir/target.db, with
// Force, under whatever CONTROLFEED_FAILPOINTS the parent set.
const childDirEnv = "SNAPSHOT_FAILPOINT_CHILD_DIR"

func TestRestoreChild(t *testing.T) {
	dir := os.Getenv(childDirEnv)
	if dir == "" {
		t.Skip("only runs as the child of a failpoint kill test")
	}
	ref, err := os.ReadFile(filepath.Join(dir, "manifest.ref"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := filestore.New(filepath.Join(dir, "store"), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = snapshot.RestoreRef(context.Background(), st, string(ref), filepath.Join(dir, "target.db"), &snapshot.RestoreOptions{Force: true})
	fmt.Printf(failpointtest.Survived+" Restore = %v\n", err)
}

// copyFile copies src to dst if src exists.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// A kill -9 at each failure point of Restore leaves the target either the
// complete old database (with the transactions that were only in its WAL)
// or the complete new one, and a retry completes the restore.
func TestFailpoint_KillDuringRestore(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		point    string
		replaced bool
	}{
		{failpoint.SnapshotRestoreMidWrite, false},
		{failpoint.SnapshotRestoreBeforeRename, false},
		{failpoint.SnapshotRestoreAfterRename, true},
	} {
		t.Run(tc.point, func(t *testing.T) {
			dir := t.TempDir()
			store, err := filestore.New(filepath.Join(dir, "store"), nil)
			if err != nil {
				t.Fatal(err)
			}
			f := newFleet(t, store)
			f.publish(60)
			f.catchUp()
			m, err := snapshot.Create(ctx, f.node, store, nil)
			if err != nil {
				t.Fatal(err)
			}
			newDigest := digest(t, f.node)

			// The old target: another node that applied the first 25
			// events, as a crash would leave it on disk, its last
			// transactions only in the WAL (copied while it is open).
			src := &fakeSource{}
			src.events = append(src.events, f.src.events[:25]...)
			oldPath := filepath.Join(t.TempDir(), "old.db")
			old := openNode(t, oldPath)
			a := newApplier(t, old, src, store)
			for {
				n, err := a.Step(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					break
				}
			}
			oldDigest := digest(t, old)
			target := filepath.Join(dir, "target.db")
			for _, sfx := range []string{"", "-wal"} {
				copyFile(t, oldPath+sfx, target+sfx)
			}
			if fi, err := os.Stat(target + "-wal"); err != nil || fi.Size() == 0 {
				t.Fatalf("the old target has no WAL content to lose (%v); the test needs it", err)
			}
			if err := os.WriteFile(filepath.Join(dir, "manifest.ref"), []byte(m.Ref), 0o600); err != nil {
				t.Fatal(err)
			}

			failpointtest.RunKilledChild(t, "TestRestoreChild", tc.point+"=kill", childDirEnv+"="+dir)

			want, wantCursor := oldDigest, uint64(25)
			if tc.replaced {
				want, wantCursor = newDigest, 60
			}
			if d, c := openRestored(t, target); d != want || c != wantCursor {
				t.Fatalf("after a kill at %s: target digest %s cursor %d, want %s %d (replaced=%v)", tc.point, d, c, want, wantCursor, tc.replaced)
			}
			_, tmpErr := os.Stat(target + snapshot.TempSuffix)
			if tc.replaced != errors.Is(tmpErr, os.ErrNotExist) {
				t.Logf("temporary file after the kill: %v", tmpErr)
			}

			// A retry completes the restore and removes the leftover.
			if _, err := snapshot.RestoreRef(ctx, store, m.Ref, target, &snapshot.RestoreOptions{Force: true}); err != nil {
				t.Fatal(err)
			}
			if d, c := openRestored(t, target); d != newDigest || c != 60 {
				t.Fatalf("after the retry: digest %s cursor %d, want the snapshot's", d, c)
			}
			if _, err := os.Stat(target + snapshot.TempSuffix); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("leftover temporary file after the retry: %v", err)
			}
		})
	}
}

// Injected errors: before the rename the old database stays, complete;
// after it the restore is done though the caller sees the error.
func TestFailpoint_RestoreErrors(t *testing.T) {
	ctx := context.Background()
	store := newStore(t)
	f := newFleet(t, store)
	f.publish(20)
	f.catchUp()
	m, err := snapshot.Create(ctx, f.node, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(failpoint.Disable)
	for _, tc := range []struct {
		point    string
		replaced bool
	}{
		{failpoint.SnapshotRestoreMidWrite, false},
		{failpoint.SnapshotRestoreBeforeRename, false},
		{failpoint.SnapshotRestoreAfterRename, true},
	} {
		target := filepath.Join(t.TempDir(), "n.db")
		if err := failpoint.Enable(tc.point + "=1*error"); err != nil {
			t.Fatal(err)
		}
		err := snapshot.Restore(ctx, store, m, target, nil)
		if !errors.Is(err, failpoint.ErrInjected) || !strings.HasPrefix(err.Error(), "snapshot: restore ") {
			t.Fatalf("%s: Restore = %v, want the injected error", tc.point, err)
		}
		_, statErr := os.Stat(target)
		if tc.replaced == errors.Is(statErr, os.ErrNotExist) {
			t.Fatalf("%s: target exists = %v, want %v", tc.point, statErr == nil, tc.replaced)
		}
		if _, err := os.Stat(target + snapshot.TempSuffix); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s: temporary file left after an error: %v", tc.point, err)
		}
	}
}

// A WAL left beside a damaged target must not be replayed onto the new
// database. (Today the inspecting connection's close already checkpoints it
// into the damaged file and deletes it; Restore's removal of the sidecars
// before the rename is what holds if it does not.)
func TestRestore_StaleWALRemoved(t *testing.T) {
	ctx := context.Background()
	store := newStore(t)
	f := newFleet(t, store)
	f.publish(30)
	f.catchUp()
	m, err := snapshot.Create(ctx, f.node, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := digest(t, f.node)
	f.publish(30)
	f.catchUp() // the node's WAL now holds frames the snapshot does not have

	target := filepath.Join(t.TempDir(), "n.db")
	if err := os.WriteFile(target, []byte(strings.Repeat("damaged ", 512)), 0o600); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join(f.nodeDir, "node.db-wal"), target+"-wal")
	if fi, err := os.Stat(target + "-wal"); err != nil || fi.Size() == 0 {
		t.Fatalf("no WAL to leave behind: %v", err)
	}
	if err := snapshot.Restore(ctx, store, m, target, &snapshot.RestoreOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if d, c := openRestored(t, target); d != want || c != 30 {
		t.Fatalf("restored digest %s cursor %d, want the snapshot's %s 30: a stale WAL was replayed", d, c, want)
	}
}
