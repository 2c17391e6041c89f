package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/snapshot"
	"github.com/controlfeed/controlfeed/snapshot/natscatalog"
)

// stateDigest reads the applier's state digest of the database at db.
func (f *joinFleet) stateDigest(db string) applier.StateDigest {
	f.t.Helper()
	ro, err := node.OpenDBReadOnly(context.Background(), db)
	if err != nil {
		f.t.Fatal(err)
	}
	defer ro.Close()
	d, err := applier.ReadStateDigest(context.Background(), ro)
	if err != nil {
		f.t.Fatal(err)
	}
	return d
}

// A node whose database is deleted while the fleet runs rejoins from the
// snapshot another node publishes periodically (serve --snapshot-every),
// although the stream no longer holds the events it would replay, and
// converges: same state digest and kv state, cursor = head. The
// publishing node keeps only --snapshot-keep snapshots and shows them in
// its status.
func TestBootstrap_WipedNodeRejoinsFromPeriodicSnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes thousands of events")
	}
	const retain, every = 400, 300
	f := newJoinFleet(t, retain, 200)
	a, b := filepath.Join(f.dir, "a.db"), filepath.Join(f.dir, "b.db")
	addr := freeAddr(t)
	// By count while events flow; by time (1s) to catch up with the head
	// once they stop.
	f.serve("a", a, "--snapshot-every", "300", "--snapshot-interval", "1s", "--snapshot-keep", "2", "--listen", addr)
	f.serve("b", b)
	f.publishPaced(1000, 100, "a", a)
	f.waitCursor("b", b, uint64(f.n))

	// Wiped while the rest of the fleet runs on, past the retention.
	f.stop("b")
	for _, p := range []string{b, b + "-wal", b + "-shm"} {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	var st string
	status := func() node.Status {
		st = httpGet(t, "http://"+addr+"/v1/status")
		var s node.Status
		if err := json.Unmarshal([]byte(st), &s); err != nil {
			t.Fatalf("status: %v: %s", err, st)
		}
		return s
	}
	defer func() {
		if t.Failed() {
			t.Logf("status of a: %s\nlog of a:\n%s\nlog of b:\n%s", st, f.logs["a"], f.logs["b"])
		}
	}()
	for range 3 { // three snapshots, each a new latest: the oldest is collected
		f.publishPaced(every, 100, "a", a)
		waitFor(t, time.Minute, "a snapshot at the head", func() bool {
			s := status()
			return s.Snapshots != nil && s.Snapshots.Latest != nil && s.Snapshots.Latest.ControlVersion == uint64(f.n)
		})
	}
	if s := status(); s.Snapshots.Uncovered {
		t.Fatalf("snapshotter status %+v: want covered", s.Snapshots)
	}
	f.serve("b", b)
	f.waitCursor("b", b, uint64(f.n))
	if !strings.Contains(f.logs["b"].String(), "bootstrap: restored the feed's latest snapshot") {
		t.Fatalf("the wiped node did not bootstrap:\n%s", f.logs["b"])
	}
	f.publish(50)
	head := uint64(f.n)
	f.waitCursor("a", a, head)
	f.waitCursor("b", b, head)
	if da, db := f.stateDigest(a), f.stateDigest(b); da != db || da.Cursor != head {
		t.Fatalf("state digests differ: a %+v, b %+v (head %d)", da, db, head)
	}
	if f.digest(a) != f.digest(b) {
		t.Fatal("kv state differs between the reference and the rejoined node")
	}

	// The publisher kept 2 snapshots, the newest inside the retention.
	var ccfg snapshot.CatalogConfig
	ccfg.Feed.NATS.URLs = []string{f.srv.ClientURL()}
	cat, err := natscatalog.New(context.Background(), ccfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	// The collection runs just after each publish: wait for the last one's.
	var rs []snapshot.Record
	waitFor(t, 30*time.Second, "the publisher's collection down to --snapshot-keep 2", func() bool {
		rs, err = cat.List(context.Background())
		return err == nil && len(rs) == 2
	})
	if !rs[0].Covers(head - retain + 1) {
		t.Errorf("latest snapshot at %d does not cover the retention (head %d, retain %d)", rs[0].ControlVersion, head, retain)
	}
	if s := status(); s.Snapshots.Pruned == 0 || s.Snapshots.Created < 3 {
		t.Errorf("snapshotter status %+v: want 3 or more created, some pruned", s.Snapshots)
	}
	if st := httpGet(t, "http://"+addr+"/metrics"); !strings.Contains(st, "controlfeed_snapshots_created_total") {
		t.Errorf("metrics lack the snapshotter's")
	}
}
