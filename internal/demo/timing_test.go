package demo

import (
	"context"
	"testing"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
)

type sparseSource struct{}

func (sparseSource) Poll(context.Context, uint64) ([]controlevent.Event, error) { return nil, nil }
func (sparseSource) Name() string                                               { return "sparse" }

type denseSource struct{ sparseSource }

func (denseSource) CheckGap(context.Context, uint64, uint64) error { return feed.ErrGap }

// The demo's wrapper must keep the applier's gap backstop for a dense feed
// and must not claim density for a sparse one.
func TestTimedSource_ForwardsGapChecker(t *testing.T) {
	if _, ok := newTimedSource(sparseSource{}).source().(feed.GapChecker); ok {
		t.Error("a wrapped sparse source claims feed.GapChecker")
	}
	gc, ok := newTimedSource(denseSource{}).source().(feed.GapChecker)
	if !ok {
		t.Fatal("a wrapped dense source lost feed.GapChecker")
	}
	if err := gc.CheckGap(context.Background(), 1, 3); err != feed.ErrGap {
		t.Errorf("CheckGap = %v, want the inner source's answer", err)
	}
}
