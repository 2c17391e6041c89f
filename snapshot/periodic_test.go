package snapshot_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/snapshot"
	"github.com/controlfeed/controlfeed/snapshot/filecatalog"
)

// A periodic snapshotter on a node that keeps applying publishes a snapshot
// every Every events, keeps Keep of them (deleting the others' artifacts,
// never the latest), and every published one restores to a valid node.
func TestPeriodic_EveryAndKeep(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := newStore(t)
	f := newFleet(t, store)
	cat, err := filecatalog.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	var uncovered bool
	var mu sync.Mutex
	p, err := snapshot.NewPeriodic(&snapshot.PeriodicConfig{
		DB: f.node, Store: store, Catalog: cat, Every: 50, Keep: 2,
		CheckInterval: 5 * time.Millisecond, CoverCheckInterval: time.Millisecond, Registerer: reg,
		Create: snapshot.CreateOptions{Node: "n1", TempDir: t.TempDir()},
		Covers: func(_ context.Context, cursor uint64) (uint64, bool, error) {
			mu.Lock()
			defer mu.Unlock()
			return 1000, uncovered, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()

	// Apply in steps of 30 events while the snapshotter runs.
	var manifests []string
	for range 10 {
		f.publish(30)
		f.catchUp()
		time.Sleep(20 * time.Millisecond)
		if st := p.Status(); st.LastCreated != nil && (len(manifests) == 0 || manifests[len(manifests)-1] != st.LastCreated.Manifest) {
			manifests = append(manifests, st.LastCreated.Manifest)
		}
	}
	waitFor(t, func() bool {
		st := p.Status()
		return st.Latest != nil && cursor(t, f.node)-st.Latest.ControlVersion < 50
	})
	// The collection runs after each publish: wait for the last one's.
	waitFor(t, func() bool { st := p.Status(); return st.Created >= 4 && st.Pruned >= st.Created-2 })
	st := p.Status()
	if st.Created < 4 || st.Failures != 0 || st.Every != 50 {
		t.Fatalf("status after 300 events at every 50 = %+v; want at least 4 snapshots, no failure", st)
	}
	if st.Pruned < st.Created-2 {
		t.Errorf("pruned %d of %d snapshots with keep 2, want at least %d", st.Pruned, st.Created, st.Created-2)
	}
	rs, err := cat.List(ctx)
	if err != nil || len(rs) != 2 {
		t.Fatalf("catalog history = %d records, %v; want 2 (keep)", len(rs), err)
	}
	latest, _ := cat.Latest(ctx)
	if rs[0] != latest || *st.Latest != latest {
		t.Fatalf("newest kept %+v, catalog latest %+v, status latest %+v: want one", rs[0], latest, *st.Latest)
	}
	kept := map[string]bool{rs[0].Manifest: true, rs[1].Manifest: true}
	for _, m := range manifests {
		_, err := snapshot.Load(ctx, store, m)
		if kept[m] && err != nil {
			t.Errorf("kept snapshot %s: %v", m, err)
		}
		if !kept[m] && !errors.Is(err, artifact.ErrNotFound) {
			t.Errorf("pruned snapshot %s: Load = %v, want ErrNotFound (artifact deleted)", m, err)
		}
	}
	// The latest restores to a node at its cursor.
	target := t.TempDir() + "/restored.db"
	m, err := snapshot.RestoreRef(ctx, store, latest.Manifest, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, cv := openRestored(t, target); cv != m.ControlVersion || cv != latest.ControlVersion {
		t.Fatalf("restored cursor %d, manifest %d, record %d", cv, m.ControlVersion, latest.ControlVersion)
	}

	// The "no snapshot covers the retention" state shows in status and
	// metrics.
	mu.Lock()
	uncovered = true
	mu.Unlock()
	waitFor(t, func() bool { return p.Status().Uncovered })
	if st := p.Status(); st.FirstAvailable != 1000 {
		t.Errorf("FirstAvailable = %d, want 1000", st.FirstAvailable)
	}
	// Uncovered, the node publishes at its next event, before Every.
	before := p.Status().Created
	f.publish(1)
	f.catchUp()
	waitFor(t, func() bool {
		st := p.Status()
		return st.Created > before && st.Latest.ControlVersion == cursor(t, f.node)
	})
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP controlfeed_snapshot_uncovered 1 when the feed no longer holds the event after the latest snapshot's cursor: joining or lagging nodes cannot bootstrap until a newer one is published.
# TYPE controlfeed_snapshot_uncovered gauge
controlfeed_snapshot_uncovered 1
`), "controlfeed_snapshot_uncovered"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 6 {
		t.Errorf("metrics = %d, %v; want 6", n, err)
	}
	if probs, err := testutil.GatherAndLint(reg); err != nil || len(probs) != 0 {
		t.Errorf("lint: %v %v", probs, err)
	}
	cancel()
	<-done
}

// Interval: a snapshot is due once the latest is Interval old and the
// cursor moved; an idle node takes none.
func TestPeriodic_Interval(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := newStore(t)
	f := newFleet(t, store)
	cat, err := filecatalog.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	p, err := snapshot.NewPeriodic(&snapshot.PeriodicConfig{DB: f.node, Store: store, Catalog: cat,
		Interval: time.Hour, Keep: -1, CheckInterval: 5 * time.Millisecond, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	go p.Run(ctx)
	time.Sleep(30 * time.Millisecond)
	if st := p.Status(); st.Created != 0 {
		t.Fatalf("a node at cursor 0 took a snapshot: %+v", st)
	}
	f.publish(5)
	f.catchUp()
	waitFor(t, func() bool { return p.Status().Created == 1 }) // none published yet: due at once
	f.publish(5)
	f.catchUp()
	time.Sleep(30 * time.Millisecond)
	if st := p.Status(); st.Created != 1 {
		t.Fatalf("snapshot taken before the interval: %+v", st)
	}
	advance(time.Hour)
	waitFor(t, func() bool { return p.Status().Created == 2 })
	advance(2 * time.Hour) // idle: cursor unchanged
	time.Sleep(30 * time.Millisecond)
	if st := p.Status(); st.Created != 2 || st.LastCreated.ControlVersion != 10 {
		t.Fatalf("idle node: %+v; want 2 snapshots, the last at 10", st)
	}
	if rs, _ := cat.List(ctx); len(rs) != 2 {
		t.Fatalf("Keep -1 removed snapshots: %d left", len(rs))
	}
}

func TestPeriodicConfig_Validate(t *testing.T) {
	store := newStore(t)
	db := openNode(t, t.TempDir()+"/n.db")
	cat, _ := filecatalog.New(t.TempDir())
	for name, c := range map[string]*snapshot.PeriodicConfig{
		"nil":         nil,
		"no db":       {Store: store, Catalog: cat, Every: 1},
		"no cadence":  {DB: db, Store: store, Catalog: cat},
		"negative":    {DB: db, Store: store, Catalog: cat, Interval: -time.Second},
		"no catalog":  {DB: db, Store: store, Every: 1},
		"bad tempdir": {DB: db, Store: store, Catalog: cat, Every: 1, Create: snapshot.CreateOptions{TempDir: "/nonexistent/x"}},
	} {
		if _, err := snapshot.NewPeriodic(c); err == nil {
			t.Errorf("%s: NewPeriodic accepted %+v", name, c)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
