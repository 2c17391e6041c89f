package filecatalog_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/controlfeed/controlfeed/snapshot"
	"github.com/controlfeed/controlfeed/snapshot/catalogtest"
	"github.com/controlfeed/controlfeed/snapshot/filecatalog"
)

func TestConformance(t *testing.T) {
	catalogtest.Run(t, func(t *testing.T) snapshot.Catalog {
		c, err := filecatalog.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return c
	})
}

// The feed directory is the producer's to create.
func TestNew_MissingFeedDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "feed")
	if _, err := filecatalog.New(dir); err == nil {
		t.Fatal("New on a missing feed directory succeeded")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("New created the feed directory: %v", err)
	}
}

// Through the registry, and the layout documented in the package.
func TestOpenCatalog_Layout(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c, err := snapshot.OpenCatalog(ctx, filecatalog.Name, snapshot.CatalogConfig{})
	if err == nil {
		t.Fatalf("OpenCatalog without a feed directory = %v, want an error", c)
	}
	var cfg snapshot.CatalogConfig
	cfg.Feed.FileDir = dir
	if c, err = snapshot.OpenCatalog(ctx, filecatalog.Name, cfg); err != nil {
		t.Fatal(err)
	}
	r := snapshot.Record{Manifest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", ControlVersion: 3, Size: 10}
	if err := c.Publish(ctx, r); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"latest.json", "history/00000000000000000003-0123456789abcdef.json"} {
		if _, err := os.Stat(filepath.Join(dir, filecatalog.Dir, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	// A torn or foreign latest.json is an error naming the file, not "none".
	os.WriteFile(filepath.Join(dir, filecatalog.Dir, "latest.json"), []byte("{"), 0o644)
	if _, err := c.Latest(ctx); err == nil || errorsIsNoSnapshot(err) {
		t.Fatalf("Latest on a torn latest.json = %v", err)
	}
}

func errorsIsNoSnapshot(err error) bool { return err != nil && isNo(err) }

func isNo(err error) bool { return errors.Is(err, snapshot.ErrNoSnapshot) }
