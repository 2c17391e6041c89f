package filesource_test

import (
	"context"
	"testing"

	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/feedtest"
	"github.com/controlfeed/controlfeed/feed/filesource"
)

type harness struct {
	dir  string
	opts *filesource.Options
}

func (h *harness) OpenSource(_ context.Context, t *testing.T) feed.Source {
	t.Helper()
	s, err := filesource.NewSource(h.dir, h.opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func (h *harness) OpenSink(_ context.Context, t *testing.T) feed.Sink {
	t.Helper()
	s, err := filesource.NewSink(h.dir, h.opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func (h *harness) Features() feedtest.Features {
	return feedtest.Features{Persistent: true, GapFree: true}
}

func TestConformance(t *testing.T) {
	t.Run("Default", func(t *testing.T) {
		feedtest.RunConformanceTests(t, func(_ context.Context, t *testing.T) feedtest.Harness {
			return &harness{dir: t.TempDir()}
		})
	})
	// A tiny batch bound exercises pagination in every test.
	t.Run("MaxBatch3", func(t *testing.T) {
		feedtest.RunConformanceTests(t, func(_ context.Context, t *testing.T) feedtest.Harness {
			return &harness{dir: t.TempDir(), opts: &filesource.Options{MaxBatch: 3}}
		})
	})
	// The fallback used where inotify is unavailable: list the directory on
	// every call, re-reading only changed files.
	t.Run("NoWatcher", func(t *testing.T) {
		defer filesource.SetDisableWatcher(true)()
		feedtest.RunConformanceTests(t, func(_ context.Context, t *testing.T) feedtest.Harness {
			return &harness{dir: t.TempDir()}
		})
	})
}
