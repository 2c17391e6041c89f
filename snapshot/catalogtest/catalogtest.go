// Package catalogtest is the conformance suite every snapshot catalog
// backend runs against itself: the contract of snapshot.Catalog's doc
// comments, one subtest per sentence.
package catalogtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/snapshot"
)

// Open returns a new, empty catalog for t. Calling it again within one
// subtest must not be needed; each subtest gets a fresh one.
type Open func(t *testing.T) snapshot.Catalog

// record returns a valid record at cursor cv, distinct per (cv, tag).
func record(cv uint64, tag string) snapshot.Record {
	return snapshot.Record{
		Manifest:       artifact.RefOf(fmt.Appendf(nil, "manifest %d %s", cv, tag)),
		ControlVersion: cv, AppliedEvents: int64(cv), Size: 4096, Node: "n-" + tag,
		CreatedAt: time.Unix(int64(cv), 0).UTC(), PublishedAt: time.Unix(int64(cv)+1, 0).UTC(),
	}
}

// Run runs the suite.
func Run(t *testing.T, open Open) {
	ctx := context.Background()
	t.Run("EmptyLatest", func(t *testing.T) {
		c := open(t)
		if _, err := c.Latest(ctx); !errors.Is(err, snapshot.ErrNoSnapshot) {
			t.Fatalf("Latest on an empty catalog = %v, want ErrNoSnapshot", err)
		}
		if rs, err := c.List(ctx); err != nil || len(rs) != 0 {
			t.Fatalf("List on an empty catalog = %v, %v; want empty", rs, err)
		}
	})
	t.Run("PublishLatest", func(t *testing.T) {
		c := open(t)
		r := record(10, "a")
		if err := c.Publish(ctx, r); err != nil {
			t.Fatal(err)
		}
		got, err := c.Latest(ctx)
		if err != nil || got != r {
			t.Fatalf("Latest = %+v, %v; want %+v", got, err, r)
		}
		if err := c.Publish(ctx, r); err != nil {
			t.Fatalf("publishing the latest again = %v, want nil (no-op)", err)
		}
		if rs, _ := c.List(ctx); len(rs) != 1 {
			t.Fatalf("List after publishing one record twice = %d records, want 1", len(rs))
		}
	})
	t.Run("ErrOlder", func(t *testing.T) {
		c := open(t)
		if err := c.Publish(ctx, record(20, "a")); err != nil {
			t.Fatal(err)
		}
		if err := c.Publish(ctx, record(5, "b")); !errors.Is(err, snapshot.ErrOlder) {
			t.Fatalf("publishing an older record = %v, want ErrOlder", err)
		}
		if got, _ := c.Latest(ctx); got.ControlVersion != 20 {
			t.Fatalf("latest moved backwards to %d", got.ControlVersion)
		}
	})
	t.Run("ListNewestFirst", func(t *testing.T) {
		c := open(t)
		for _, cv := range []uint64{1, 7, 7, 30} {
			if err := c.Publish(ctx, record(cv, fmt.Sprint(cv, time.Now().UnixNano()))); err != nil {
				t.Fatal(err)
			}
		}
		rs, err := c.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var cvs []uint64
		for _, r := range rs {
			cvs = append(cvs, r.ControlVersion)
		}
		if fmt.Sprint(cvs) != "[30 7 7 1]" {
			t.Fatalf("List cursors = %v, want [30 7 7 1]", cvs)
		}
	})
	t.Run("Invalid", func(t *testing.T) {
		c := open(t)
		if err := c.Publish(ctx, snapshot.Record{Manifest: "nope", Size: 1}); err == nil {
			t.Fatal("Publish of a record with a malformed manifest ref succeeded")
		}
	})
	t.Run("ConcurrentPublish", func(t *testing.T) {
		c := open(t)
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for i := range 8 {
			wg.Go(func() {
				err := c.Publish(ctx, record(uint64(100+i), "c"))
				if errors.Is(err, snapshot.ErrOlder) {
					err = nil // a newer one won first: allowed
				}
				errs[i] = err
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		if got, err := c.Latest(ctx); err != nil || got.ControlVersion != 107 {
			t.Fatalf("latest after concurrent publishes = %d, %v; want 107", got.ControlVersion, err)
		}
	})
	t.Run("Forget", func(t *testing.T) {
		c := open(t)
		f, ok := c.(snapshot.Forgetter)
		if !ok {
			t.Skip("the catalog does not implement snapshot.Forgetter")
		}
		a, b, l := record(10, "a"), record(20, "b"), record(30, "c")
		if err := f.Forget(ctx, a); err != nil {
			t.Fatalf("Forget on an empty catalog = %v, want nil", err)
		}
		for _, r := range []snapshot.Record{a, b, l} {
			if err := c.Publish(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Forget(ctx, l); !errors.Is(err, snapshot.ErrLatest) {
			t.Fatalf("Forget(latest) = %v, want ErrLatest", err)
		}
		if err := f.Forget(ctx, a); err != nil {
			t.Fatal(err)
		}
		if err := f.Forget(ctx, a); err != nil {
			t.Fatalf("Forget of a forgotten record = %v, want nil", err)
		}
		rs, err := c.List(ctx)
		if err != nil || len(rs) != 2 || rs[0] != l || rs[1] != b {
			t.Fatalf("List after Forget = %+v, %v; want [%v %v]", rs, err, l.ControlVersion, b.ControlVersion)
		}
		if got, err := c.Latest(ctx); err != nil || got != l {
			t.Fatalf("Latest after Forget = %+v, %v; want %+v", got, err, l)
		}
	})
}
