package snapshot_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/controlfeed/controlfeed/snapshot"
)

func TestInspect(t *testing.T) {
	ctx := context.Background()
	store := newStore(t)
	f := newFleet(t, store)
	dir := t.TempDir()
	fresh := filepath.Join(dir, "fresh.db")
	openNode(t, fresh).Close()
	for path, wantNew := range map[string]bool{filepath.Join(dir, "absent.db"): true, fresh: true} {
		st, err := snapshot.Inspect(ctx, path)
		if err != nil || st.New != wantNew {
			t.Fatalf("Inspect(%s) = %+v, %v; want New %v", path, st, err, wantNew)
		}
	}
	f.publish(7)
	f.catchUp()
	st, err := snapshot.Inspect(ctx, filepath.Join(f.nodeDir, "node.db"))
	if err != nil || st.New || st.Cursor != 7 || st.AppliedEvents != 7 || st.Reason == "" {
		t.Fatalf("Inspect of a node at 7 = %+v, %v", st, err)
	}
}

// Export writes a standalone node database that a node can open as is,
// and reports progress.
func TestExport(t *testing.T) {
	ctx := context.Background()
	store := newStore(t)
	f := newFleet(t, store)
	f.publish(40)
	f.catchUp()
	out := filepath.Join(t.TempDir(), "export.db")
	var mu sync.Mutex
	phases := map[string]bool{}
	m, err := snapshot.Export(ctx, f.node, out, &snapshot.CreateOptions{Node: "n1", Progress: func(phase string, done, total int64) {
		mu.Lock()
		phases[phase] = true
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	if m.ControlVersion != 40 || m.Ref != "" || !phases[snapshot.PhaseCopy] {
		t.Fatalf("manifest %+v, phases %v", m, phases)
	}
	fi, _ := os.Stat(out)
	if fi.Size() != m.Database.Size {
		t.Fatalf("exported %d bytes, manifest says %d", fi.Size(), m.Database.Size)
	}
	if d, c := openRestored(t, out); d != digest(t, f.node) || c != 40 {
		t.Fatalf("exported database: cursor %d, digest differs", c)
	}
	if _, err := snapshot.Export(ctx, f.node, out, nil); err == nil {
		t.Fatal("Export over an existing file succeeded")
	}
}

func TestProgress(t *testing.T) {
	ctx := context.Background()
	store := newStore(t)
	f := newFleet(t, store)
	f.publish(20)
	f.catchUp()
	var mu sync.Mutex
	last := map[string][2]int64{}
	progress := func(phase string, done, total int64) {
		mu.Lock()
		last[phase] = [2]int64{done, total}
		mu.Unlock()
	}
	m, err := snapshot.Create(ctx, f.node, store, &snapshot.CreateOptions{Progress: progress})
	if err != nil {
		t.Fatal(err)
	}
	if err := snapshot.Restore(ctx, store, m, filepath.Join(t.TempDir(), "r.db"), &snapshot.RestoreOptions{Progress: progress}); err != nil {
		t.Fatal(err)
	}
	size := m.Database.Size
	for _, p := range []string{snapshot.PhaseCopy, snapshot.PhaseStore, snapshot.PhaseFetch, snapshot.PhaseCheck} {
		if got := last[p]; got != [2]int64{size, size} {
			t.Errorf("last progress of %s = %v, want %d of %d", p, got, size, size)
		}
	}
}
