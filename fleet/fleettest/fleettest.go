// Package fleettest is the conformance suite of fleet.Store backends: every
// backend's own test calls Run with a function opening a fresh store.
package fleettest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/fleet"
)

// Run runs every test of the suite; open returns a new, empty store (its
// cleanup registered on t) and may be called once per subtest.
func Run(t *testing.T, open func(t *testing.T) fleet.Store) {
	ctx := context.Background()
	report := func(node string, cursor uint64) fleet.Report {
		return fleet.Report{Format: fleet.Format, Node: node, Cursor: cursor, State: "applying",
			StateDigest: fleet.Digest{Cursor: cursor, Digest: "sha256:00"}, ReportedAt: time.Now().UTC()}
	}
	t.Run("Empty", func(t *testing.T) {
		s := open(t)
		es, err := s.List(ctx)
		if err != nil || len(es) != 0 {
			t.Fatalf("List of an empty store = %v, %v; want nothing, nil", es, err)
		}
		if _, err := s.Get(ctx, "nobody"); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("Get of a missing node: %v; want ErrNotFound", err)
		}
		if err := s.Delete(ctx, "nobody"); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("Delete of a missing node: %v; want ErrNotFound", err)
		}
	})
	t.Run("PutReplacesAndLists", func(t *testing.T) {
		s := open(t)
		before := time.Now().Add(-2 * time.Second)
		for _, r := range []fleet.Report{report("b", 1), report("a", 1), report("b", 7)} {
			if err := s.Put(ctx, r); err != nil {
				t.Fatalf("Put %s: %v", r.Node, err)
			}
		}
		es, err := s.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) != 2 || es[0].Report.Node != "a" || es[1].Report.Node != "b" || es[1].Report.Cursor != 7 {
			t.Fatalf("List = %+v; want a then b at cursor 7", es)
		}
		for _, e := range es {
			if e.SeenAt.Before(before) || e.SeenAt.After(time.Now().Add(2*time.Second)) {
				t.Errorf("%s: SeenAt %v, want about now", e.Report.Node, e.SeenAt)
			}
		}
		e, err := s.Get(ctx, "b")
		if err != nil || e.Report.Cursor != 7 {
			t.Errorf("Get b = %+v, %v", e, err)
		}
	})
	t.Run("Delete", func(t *testing.T) {
		s := open(t)
		for _, n := range []string{"a", "b"} {
			if err := s.Put(ctx, report(n, 1)); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Delete(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		es, err := s.List(ctx)
		if err != nil || len(es) != 1 || es[0].Report.Node != "b" {
			t.Errorf("List after Delete a = %+v, %v", es, err)
		}
		if _, err := s.Get(ctx, "a"); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("Get after Delete: %v; want ErrNotFound", err)
		}
	})
	t.Run("RefusesInvalid", func(t *testing.T) {
		s := open(t)
		for _, r := range []fleet.Report{report("../escape", 1), report(".hidden", 1), report("", 1), {Format: 99, Node: "x"}} {
			if err := s.Put(ctx, r); err == nil {
				t.Errorf("Put of node %q format %d accepted", r.Node, r.Format)
			}
		}
	})
}
