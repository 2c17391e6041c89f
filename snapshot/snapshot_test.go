package snapshot_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/snapshot"
)

func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	store := newStore(t)
	f := newFleet(t, store)
	f.publish(120)
	f.catchUp()
	want, wantCursor := digest(t, f.node), cursor(t, f.node)
	if wantCursor != 120 {
		t.Fatalf("node cursor %d, want 120", wantCursor)
	}

	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m, err := snapshot.Create(ctx, f.node, store, &snapshot.CreateOptions{Node: "edge-1", TempDir: t.TempDir(), Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	if m.ControlVersion != 120 || m.AppliedEvents != 120 || m.Node != "edge-1" || !m.CreatedAt.Equal(at) ||
		m.Kind != snapshot.Kind || m.Format != snapshot.FormatVersion || m.Database.Ref != m.Database.SHA256 || m.Database.Size <= 0 {
		t.Fatalf("manifest = %+v", m)
	}
	sup, _ := snapshot.SupportedSchemas()
	if m.Schemas[snapshot.ComponentApplier] != sup[snapshot.ComponentApplier] || m.Schemas[snapshot.ComponentKV] != sup[snapshot.ComponentKV] {
		t.Fatalf("schemas %v, supported %v", m.Schemas, sup)
	}
	if _, ok := m.Schemas[snapshot.ComponentOutbox]; ok {
		t.Fatalf("schemas %v name the outbox, which a node database lacks", m.Schemas)
	}

	// The manifest is stored and loads back equal.
	loaded, err := snapshot.Load(ctx, store, m.Ref)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := loaded.Encode()
	b, _ := m.Encode()
	if !bytes.Equal(a, b) || loaded.Ref != m.Ref {
		t.Fatalf("loaded manifest\n%s\nwant\n%s", a, b)
	}

	target := filepath.Join(t.TempDir(), "new.db")
	got, err := snapshot.RestoreRef(ctx, store, m.Ref, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Ref != m.Ref {
		t.Fatalf("RestoreRef returned manifest %s, want %s", got.Ref, m.Ref)
	}
	if _, err := os.Stat(target + snapshot.TempSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary file left behind: %v", err)
	}
	d, c := openRestored(t, target)
	if d != want || c != wantCursor {
		t.Fatalf("restored digest %s cursor %d, want %s %d", d, c, want, wantCursor)
	}

	// The restored node resumes from the snapshot's cursor and converges.
	f.publish(30)
	f.catchUp()
	r := openNode(t, target)
	a2 := newApplierOn(t, r, f)
	for {
		n, err := a2.Step(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	if st := a2.Status(); st.Applied != 30 {
		t.Errorf("restored node applied %d events after the snapshot, want 30 (resume from the cursor)", st.Applied)
	}
	if digest(t, r) != digest(t, f.node) || cursor(t, r) != cursor(t, f.node) {
		t.Fatalf("restored node did not converge")
	}

	// A second Restore onto the now populated target is refused.
	if err := snapshot.Restore(ctx, store, m, target, nil); !errors.Is(err, snapshot.ErrPopulated) {
		t.Fatalf("Restore onto a populated database = %v, want ErrPopulated", err)
	}
}

// The copy is consistent while the node keeps applying: in every snapshot
// the cursor is the last applied event and the kv table is the state after
// exactly those events.
func TestCreate_WhileApplying(t *testing.T) {
	ctx := context.Background()
	store := newStore(t)
	f := newFleet(t, store)
	const total = 200
	f.publish(total)

	// Expected kv digest after each prefix of events: replay on a
	// reference node, one event per step.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.catchUp()
	}()
	var snaps []snapshot.Manifest
	for len(snaps) < 4 {
		m, err := snapshot.Create(ctx, f.node, store, &snapshot.CreateOptions{TempDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, m)
		if m.ControlVersion == total {
			break
		}
	}
	wg.Wait()
	moving := 0
	for i, m := range snaps {
		target := filepath.Join(t.TempDir(), "n.db")
		if err := snapshot.Restore(ctx, store, m, target, nil); err != nil {
			t.Fatal(err)
		}
		db := openNode(t, target)
		var maxCV, n int64
		if err := db.QueryRow(`SELECT coalesce(max(control_version), 0), count(*) FROM controlfeed_applied_events`).Scan(&maxCV, &n); err != nil {
			t.Fatal(err)
		}
		if uint64(maxCV) != m.ControlVersion || n != m.AppliedEvents || uint64(n) != m.ControlVersion {
			t.Fatalf("snapshot %d: cursor %d, applied events %d (max %d): not one commit's state", i, m.ControlVersion, n, maxCV)
		}
		if d := digest(t, db); d != replayDigest(t, f, m.ControlVersion) {
			t.Fatalf("snapshot %d at %d: kv digest %s differs from a replay of the first %d events", i, m.ControlVersion, d, m.ControlVersion)
		}
		if m.ControlVersion > 0 && m.ControlVersion < total {
			moving++
		}
	}
	t.Logf("%d snapshots, %d taken mid-apply: cursors %v", len(snaps), moving, cursors(snaps))
}

func cursors(ms []snapshot.Manifest) []uint64 {
	var out []uint64
	for _, m := range ms {
		out = append(out, m.ControlVersion)
	}
	return out
}

// replayDigest applies the first n events of f's feed to a fresh node and
// returns its kv digest.
func replayDigest(t *testing.T, f *fleet, n uint64) string {
	t.Helper()
	src := &fakeSource{}
	f.src.mu.Lock()
	src.events = append(src.events, f.src.events[:n]...)
	f.src.mu.Unlock()
	db := openNode(t, filepath.Join(t.TempDir(), "replay.db"))
	a := newApplier(t, db, src, f.store)
	for {
		k, err := a.Step(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if k == 0 {
			break
		}
	}
	return digest(t, db)
}

func TestCreate_NotNode(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, newStore(t))
	_, err := snapshot.Create(ctx, f.prod, f.store, nil)
	if !errors.Is(err, snapshot.ErrNotNode) || !strings.Contains(err.Error(), "controlfeed_cursor") {
		t.Fatalf("Create of a producer database = %v, want ErrNotNode naming controlfeed_cursor", err)
	}
}

// tamperStore returns altered bytes for one reference.
type tamperStore struct {
	artifact.Store
	ref    string
	mangle func([]byte) []byte
}

func (s *tamperStore) Get(ctx context.Context, ref string) (io.ReadCloser, error) {
	if ref != s.ref {
		return s.Store.Get(ctx, ref)
	}
	b, err := artifact.GetBytes(ctx, s.Store, ref, 1<<30)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(s.mangle(b))), nil
}

func TestRestore_Refuses(t *testing.T) {
	ctx := context.Background()
	store := newStore(t)
	f := newFleet(t, store)
	f.publish(40)
	f.catchUp()
	m, err := snapshot.Create(ctx, f.node, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	dbBytes, err := artifact.GetBytes(ctx, store, m.Database.Ref, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	// A truncated database stored under its own (consistent) reference.
	half := dbBytes[:len(dbBytes)/2]
	halfRef, err := artifact.PutBytes(ctx, store, half)
	if err != nil {
		t.Fatal(err)
	}
	// A database without the kv table's schema row.
	other := newFleet(t, store)
	if _, err := other.node.Exec(`DROP TABLE controlfeed_kv_schema`); err != nil {
		t.Fatal(err)
	}
	noKV, err := snapshot.Create(ctx, other.node, store, nil)
	if err != nil {
		t.Fatal(err)
	}

	with := func(edit func(*snapshot.Manifest)) snapshot.Manifest {
		c := m
		c.Schemas = map[string]int{}
		for k, v := range m.Schemas {
			c.Schemas[k] = v
		}
		edit(&c)
		return c
	}
	flip := func(b []byte) []byte { c := bytes.Clone(b); c[len(c)/3] ^= 0xff; return c }
	cut := func(b []byte) []byte { return b[:len(b)-4096] }
	for _, tc := range []struct {
		name  string
		store artifact.Store
		m     snapshot.Manifest
		is    error
		msg   string
	}{
		{"corrupt bytes", &tamperStore{store, m.Database.Ref, flip}, m, snapshot.ErrCorrupt, "hashes to"},
		{"truncated in transit", &tamperStore{store, m.Database.Ref, cut}, m, snapshot.ErrCorrupt, "bytes, the manifest says"},
		{"truncated database", store, with(func(c *snapshot.Manifest) {
			c.Database = snapshot.Database{Ref: halfRef, SHA256: halfRef, Size: int64(len(half))}
		}), snapshot.ErrCorrupt, "PRAGMA quick_check"},
		{"missing database", store, with(func(c *snapshot.Manifest) {
			r := artifact.RefOf([]byte("nothing"))
			c.Database = snapshot.Database{Ref: r, SHA256: r, Size: 7}
		}), artifact.ErrNotFound, "not found"},
		{"wrong format", store, with(func(c *snapshot.Manifest) { c.Format = 2 }), snapshot.ErrIncompatible, "format is 2, this program supports 1"},
		{"wrong kind", store, with(func(c *snapshot.Manifest) { c.Kind = "something.else" }), snapshot.ErrIncompatible, "kind"},
		{"newer schema", store, with(func(c *snapshot.Manifest) { c.Schemas[snapshot.ComponentApplier] = 99 }), snapshot.ErrIncompatible, `schema "applier" version is 99`},
		{"unknown component", store, with(func(c *snapshot.Manifest) { c.Schemas["billing"] = 1 }), snapshot.ErrIncompatible, `schema "billing"`},
		{"no applier schema", store, with(func(c *snapshot.Manifest) { delete(c.Schemas, snapshot.ComponentApplier) }), snapshot.ErrCorrupt, "not a node snapshot"},
		{"schema differs from manifest", store, with(func(c *snapshot.Manifest) { c.Database = noKV.Database; c.ControlVersion, c.AppliedEvents = 0, 0 }), snapshot.ErrCorrupt, "schema versions"},
		{"cursor differs from manifest", store, with(func(c *snapshot.Manifest) { c.ControlVersion++ }), snapshot.ErrCorrupt, "cursor is 40 with 40 applied events, the manifest says 41"},
		{"sha differs from ref", store, with(func(c *snapshot.Manifest) { c.Database.SHA256 = halfRef }), snapshot.ErrCorrupt, "does not equal its ref"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := filepath.Join(t.TempDir(), "n.db")
			err := snapshot.Restore(ctx, tc.store, tc.m, target, nil)
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.msg) || !strings.HasPrefix(err.Error(), "snapshot: ") {
				t.Fatalf("Restore = %v\nwant an error wrapping %v containing %q", err, tc.is, tc.msg)
			}
			t.Logf("%v", err)
			for _, p := range []string{target, target + snapshot.TempSuffix} {
				if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s exists after a refused restore (%v)", p, err)
				}
			}
		})
	}

	t.Run("manifest refs", func(t *testing.T) {
		// The database's ref passed as a manifest.
		_, err := snapshot.Load(ctx, store, m.Database.Ref)
		var ie *snapshot.IncompatibleError
		if !errors.As(err, &ie) || ie.What != "kind" || !strings.Contains(err.Error(), "not a JSON manifest") {
			t.Fatalf("Load of a database ref = %v, want an IncompatibleError about the kind", err)
		}
		// A manifest of a newer format.
		b, _ := with(func(c *snapshot.Manifest) {}).Encode()
		b = bytes.Replace(b, []byte(`"format": 1`), []byte(`"format": 7`), 1)
		ref, _ := artifact.PutBytes(ctx, store, b)
		if _, err := snapshot.Load(ctx, store, ref); !errors.As(err, &ie) || ie.What != "format" || !strings.Contains(err.Error(), "upgrade controlfeed") {
			t.Fatalf("Load of a format-7 manifest = %v", err)
		}
		// A manifest with a field this format does not have.
		b, _ = m.Encode()
		b = bytes.Replace(b, []byte(`"kind"`), []byte(`"surprise": 1, "kind"`), 1)
		ref, _ = artifact.PutBytes(ctx, store, b)
		if _, err := snapshot.Load(ctx, store, ref); !errors.Is(err, snapshot.ErrCorrupt) || !strings.Contains(err.Error(), "surprise") {
			t.Fatalf("Load of a manifest with an unknown field = %v", err)
		}
	})
}

func TestRestore_Populated(t *testing.T) {
	ctx := context.Background()
	store := newStore(t)
	f := newFleet(t, store)
	f.publish(10)
	f.catchUp()
	early, err := snapshot.Create(ctx, f.node, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.publish(10)
	f.catchUp()
	late, err := snapshot.Create(ctx, f.node, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()

	// An empty (migrated, nothing applied) node database is replaced.
	empty := filepath.Join(dir, "empty.db")
	openNode(t, empty).Close()
	if err := snapshot.Restore(ctx, store, early, empty, nil); err != nil {
		t.Fatalf("Restore onto a fresh node database: %v", err)
	}
	// An empty file too.
	zero := filepath.Join(dir, "zero.db")
	os.WriteFile(zero, nil, 0o600)
	if err := snapshot.Restore(ctx, store, early, zero, nil); err != nil {
		t.Fatalf("Restore onto an empty file: %v", err)
	}

	// empty.db is now at cursor 10: a newer snapshot is refused without
	// Force, an older one is a downgrade.
	if err := snapshot.Restore(ctx, store, late, empty, nil); !errors.Is(err, snapshot.ErrPopulated) || errors.Is(err, snapshot.ErrDowngrade) ||
		!strings.Contains(err.Error(), "cursor 10") {
		t.Fatalf("Restore onto a populated database = %v, want ErrPopulated", err)
	}
	if err := snapshot.Restore(ctx, store, late, empty, &snapshot.RestoreOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, c := openRestored(t, empty); c != 20 {
		t.Fatalf("forced restore: cursor %d, want 20", c)
	}
	err = snapshot.Restore(ctx, store, early, empty, nil)
	if !errors.Is(err, snapshot.ErrDowngrade) || !errors.Is(err, snapshot.ErrPopulated) || !strings.Contains(err.Error(), "the snapshot only 10") {
		t.Fatalf("Restore of an older snapshot = %v, want ErrDowngrade", err)
	}
	if _, c := openRestored(t, empty); c != 20 {
		t.Fatalf("refused restore changed the target: cursor %d", c)
	}
	if err := snapshot.Restore(ctx, store, early, empty, &snapshot.RestoreOptions{Force: true, FullCheck: true}); err != nil {
		t.Fatal(err)
	}
	if _, c := openRestored(t, empty); c != 10 {
		t.Fatalf("forced downgrade: cursor %d, want 10", c)
	}

	// Not a controlfeed database, or not a database at all.
	foreign := filepath.Join(dir, "foreign.db")
	fdb := openNode(t, filepath.Join(dir, "scratch.db"))
	if _, err := fdb.Exec(`VACUUM INTO ?`, foreign); err != nil {
		t.Fatal(err)
	}
	fdb2 := openRaw(t, foreign)
	if _, err := fdb2.Exec(`DROP TABLE controlfeed_cursor`); err != nil {
		t.Fatal(err)
	}
	fdb2.Close()
	garbage := filepath.Join(dir, "garbage.db")
	os.WriteFile(garbage, bytes.Repeat([]byte("not sqlite "), 1000), 0o600)
	for _, p := range []string{foreign, garbage} {
		before, _ := os.ReadFile(p)
		err := snapshot.Restore(ctx, store, early, p, nil)
		if !errors.Is(err, snapshot.ErrPopulated) {
			t.Fatalf("Restore onto %s = %v, want ErrPopulated", filepath.Base(p), err)
		}
		t.Logf("%v", err)
		if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
			t.Fatalf("refused restore changed %s", p)
		}
		if err := snapshot.Restore(ctx, store, early, p, &snapshot.RestoreOptions{Force: true}); err != nil {
			t.Fatal(err)
		}
		if _, c := openRestored(t, p); c != 10 {
			t.Fatalf("forced restore onto %s: cursor %d", p, c)
		}
	}
}
