package artifacttest_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/artifacttest"
	"github.com/controlfeed/controlfeed/artifact/filestore"
)

// dirHarness is what a backend's test supplies: a way to open stores on one
// piece of storage and to tamper with it behind their back.
type dirHarness struct{ dir string }

func (h *dirHarness) Open(ctx context.Context, t *testing.T) artifact.Store {
	s, err := filestore.New(h.dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (h *dirHarness) file(ref string) string {
	hex := strings.TrimPrefix(ref, "sha256:")
	return filepath.Join(h.dir, "sha256", hex[:2], hex)
}

func (h *dirHarness) Corrupt(ctx context.Context, t *testing.T, ref string) {
	b, err := os.ReadFile(h.file(ref))
	if err != nil {
		t.Fatal(err)
	}
	b[0] ^= 1
	if err := os.WriteFile(h.file(ref), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (h *dirHarness) Remove(ctx context.Context, t *testing.T, ref string) {
	if err := os.Remove(h.file(ref)); err != nil {
		t.Fatal(err)
	}
}

// The backend's whole conformance test is then:
//
//	func TestConformance(t *testing.T) {
//		artifacttest.RunConformanceTests(t, newHarness)
//	}
var newHarness artifacttest.HarnessMaker = func(ctx context.Context, t *testing.T) artifacttest.Harness {
	return &dirHarness{dir: t.TempDir()}
}

func Example() {
	_ = newHarness // passed to RunConformanceTests from a Test function

	// BadRefs is exported for a backend's own path-escape tests.
	dir, err := os.MkdirTemp("", "artifacttest-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	s, err := filestore.New(dir, nil)
	if err != nil {
		panic(err)
	}
	for _, ref := range artifacttest.BadRefs[:3] {
		_, err := s.Get(context.Background(), ref)
		fmt.Printf("%q: %v\n", ref, err)
	}
	// Output:
	// "": filestore: get "": malformed artifact reference
	// "../x": filestore: get "../x": malformed artifact reference
	// "/etc/passwd": filestore: get "/etc/passwd": malformed artifact reference
}
