package feedtest_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/feedtest"
	"github.com/controlfeed/controlfeed/feed/filesource"
)

// dirHarness opens file-backend Sources and Sinks on one directory.
type dirHarness struct{ dir string }

func (h dirHarness) OpenSource(_ context.Context, t *testing.T) feed.Source {
	s, err := filesource.NewSource(h.dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func (h dirHarness) OpenSink(_ context.Context, t *testing.T) feed.Sink {
	s, err := filesource.NewSink(h.dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func (dirHarness) Features() feedtest.Features {
	return feedtest.Features{Persistent: true, GapFree: true}
}

// A backend's conformance test is a few lines: a Harness on fresh storage
// per test, passed to RunConformanceTests from a Test function:
//
//	func TestConformance(t *testing.T) {
//		feedtest.RunConformanceTests(t, func(_ context.Context, t *testing.T) feedtest.Harness {
//			return dirHarness{dir: t.TempDir()}
//		})
//	}
func Example() {
	var h feedtest.Harness = dirHarness{}
	fmt.Printf("%+v\n", h.Features())
	// Output:
	// {Persistent:true NeedsAck:false GapFree:true}
}

// The suite run against the file backend, as the example above describes.
func TestConformance_FileBackend(t *testing.T) {
	feedtest.RunConformanceTests(t, func(_ context.Context, t *testing.T) feedtest.Harness {
		return dirHarness{dir: t.TempDir()}
	})
}
