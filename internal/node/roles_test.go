package node_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/controlfeed/controlfeed/dbrole"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/internal/node"
)

func TestOpen_Roles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fcfg := feed.SourceConfig{FileDir: filepath.Join(dir, "feed")}
	if err := os.MkdirAll(fcfg.FileDir, 0o755); err != nil {
		t.Fatal(err)
	}
	pdb, ndb := filepath.Join(dir, "p.db"), filepath.Join(dir, "n.db")

	prod, err := node.Open(ctx, &node.Config{DB: pdb, FeedSink: "file", Feed: fcfg})
	if err != nil {
		t.Fatal(err)
	}
	// One pump per database, even within one process.
	_, err = node.Open(ctx, &node.Config{DB: pdb, FeedSink: "file", Feed: fcfg})
	if err == nil || !strings.Contains(err.Error(), "already has a running pump") || !strings.Contains(err.Error(), "pid ") {
		t.Errorf("second producer on %s: %v", pdb, err)
	}
	if err := prod.Close(); err != nil {
		t.Fatal(err)
	}
	prod, err = node.Open(ctx, &node.Config{DB: pdb, FeedSink: "file", Feed: fcfg})
	if err != nil {
		t.Fatalf("producer after the first closed: %v", err)
	}
	prod.Close()

	_, err = node.Open(ctx, &node.Config{DB: pdb, FeedSource: "file", Feed: fcfg})
	if !errors.Is(err, dbrole.ErrConflict) {
		t.Errorf("node on a producer's database: %v, want dbrole.ErrConflict", err)
	}
	n, err := node.Open(ctx, &node.Config{DB: ndb, FeedSource: "file", Feed: fcfg})
	if err != nil {
		t.Fatal(err)
	}
	n.Close()
	_, err = node.Open(ctx, &node.Config{DB: ndb, FeedSink: "file", Feed: fcfg})
	if !errors.Is(err, dbrole.ErrConflict) {
		t.Errorf("producer on a node's database: %v, want dbrole.ErrConflict", err)
	}
	if _, err := os.Stat(ndb + node.PumpLockSuffix); !os.IsNotExist(err) {
		t.Errorf("refused producer left a lock file: %v", err)
	}
	// Neither role: a single node opens either.
	for _, db := range []string{pdb, ndb} {
		n, err := node.Open(ctx, &node.Config{DB: db})
		if err != nil {
			t.Errorf("single node on %s: %v", db, err)
			continue
		}
		n.Close()
	}
	_, err = node.Open(ctx, &node.Config{DB: filepath.Join(dir, "both.db"), FeedSource: "file", FeedSink: "file", Feed: fcfg})
	if err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("source and sink on one database: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "both.db")); !os.IsNotExist(err) {
		t.Errorf("refused config created its database: %v", err)
	}
}
