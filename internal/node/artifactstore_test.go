package node_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/internal/pgtest"
	"github.com/controlfeed/controlfeed/outbox"
)

// TestOpen_PumpArtifactStore: a producer records its artifact store, and a
// later producer with another store is refused before any backend opens,
// on SQLite and on PostgreSQL; nodes and single-node processes check
// nothing.
func TestOpen_PumpArtifactStore(t *testing.T) {
	for _, dialect := range []string{"sqlite", "postgres"} {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			fcfg := feed.SourceConfig{FileDir: filepath.Join(dir, "feed")}
			if err := os.MkdirAll(fcfg.FileDir, 0o755); err != nil {
				t.Fatal(err)
			}
			db := filepath.Join(dir, "p.db")
			if dialect == "postgres" {
				db = pgtest.NewSchema(t)
			}
			arts, other := filepath.Join(dir, "arts"), filepath.Join(dir, "other")
			open := func(cfg node.Config) error {
				cfg.DB, cfg.Feed = db, fcfg
				n, err := node.Open(ctx, &cfg)
				if err == nil {
					err = n.Close()
				}
				return err
			}
			if err := open(node.Config{FeedSink: "file", Artifact: artifact.Config{Dir: arts}}); err != nil {
				t.Fatal(err)
			}
			sdb := openAny(t, db)
			got, _, ok, err := outbox.ReadArtifactStore(ctx, sdb)
			loc, lerr := artifact.Locate("file", artifact.Config{Dir: arts})
			if want := (outbox.ArtifactStore{Backend: "file", Location: loc}); lerr != nil || err != nil || !ok || got != want {
				t.Fatalf("recorded %+v, %v, %v; want %+v", got, ok, err, want)
			}
			// The same directory by another path.
			link := filepath.Join(dir, "link")
			if err := os.Symlink(arts, link); err != nil {
				t.Fatal(err)
			}
			if err := open(node.Config{FeedSink: "file", Artifact: artifact.Config{Dir: link + "/"}}); err != nil {
				t.Fatalf("producer with the recorded directory through a symlink: %v", err)
			}
			err = open(node.Config{FeedSink: "file", Artifact: artifact.Config{Dir: other}})
			if !errors.Is(err, outbox.ErrArtifactStoreMismatch) {
				t.Fatalf("producer with another directory: %v, want outbox.ErrArtifactStoreMismatch", err)
			}
			if dialect == "sqlite" {
				if _, err := os.Stat(other); !os.IsNotExist(err) {
					t.Errorf("the refused producer opened its store (created %s): %v", other, err)
				}
				// A single node on the producer's database stores where it is told.
				if err := open(node.Config{Artifact: artifact.Config{Dir: other}}); err != nil {
					t.Errorf("single node with another store: %v", err)
				}
			}
			if got, _, _, _ := outbox.ReadArtifactStore(ctx, sdb); got.Location != loc {
				t.Errorf("a refused or single-node open changed the record to %+v", got)
			}
			// The documented change on purpose.
			if _, err := sdb.ExecContext(ctx, "DELETE FROM "+outbox.ArtifactStoreTable); err != nil {
				t.Fatal(err)
			}
			if err := open(node.Config{FeedSink: "file", Artifact: artifact.Config{Dir: other}}); err != nil {
				t.Fatalf("producer with a new store after deleting the record: %v", err)
			}
		})
	}
}

// openAny opens a producer's database, SQLite path or PostgreSQL URL,
// migrated, closed when t ends.
func openAny(t *testing.T, db string) *sql.DB {
	t.Helper()
	var (
		sdb *sql.DB
		err error
	)
	if node.IsPostgresURL(db) {
		sdb, err = node.OpenPostgres(context.Background(), db, "test")
	} else {
		sdb, err = node.OpenDB(context.Background(), db)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sdb.Close() })
	return sdb
}
