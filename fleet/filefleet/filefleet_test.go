package filefleet_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/controlfeed/controlfeed/fleet"
	"github.com/controlfeed/controlfeed/fleet/filefleet"
	"github.com/controlfeed/controlfeed/fleet/fleettest"
)

func TestConformance(t *testing.T) {
	fleettest.Run(t, func(t *testing.T) fleet.Store {
		s, err := filefleet.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestNew_MissingDir(t *testing.T) {
	_, err := filefleet.New(filepath.Join(t.TempDir(), "nope"))
	if err == nil || !strings.Contains(err.Error(), "--feed-dir") {
		t.Errorf("New of a missing directory: %v; want an error naming --feed-dir", err)
	}
}

// A bad file in .nodes is reported and does not hide the other nodes;
// temporary files are ignored.
func TestList_BadFile(t *testing.T) {
	dir := t.TempDir()
	s, err := filefleet.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Put(ctx, fleet.Report{Format: fleet.Format, Node: "good"}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, filefleet.Dir, "bad.json"), []byte("{"), 0o644)
	os.WriteFile(filepath.Join(dir, filefleet.Dir, ".good.json.tmp-1"), []byte("{"), 0o644)
	es, err := s.List(ctx)
	if len(es) != 1 || es[0].Report.Node != "good" || err == nil || !strings.Contains(err.Error(), "bad.json") {
		t.Errorf("List = %+v, %v; want the good node and an error naming bad.json", es, err)
	}
}
