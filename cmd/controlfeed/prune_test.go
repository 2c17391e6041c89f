package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/filesource"
	"github.com/controlfeed/controlfeed/snapshot"
	"github.com/controlfeed/controlfeed/snapshot/filecatalog"
)

// nodeDBAt creates a node database at path whose cursor is cursor, and
// closes it.
func nodeDBAt(t *testing.T, ctx context.Context, path string, cursor uint64) {
	t.Helper()
	db := openTestDB(t, ctx, path)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := applier.SetCursor(ctx, tx, cursor); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	db.Close()
}

// schemaOf returns the names in sqlite_master of the database at path.
func schemaOf(t *testing.T, path string) []string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT name FROM sqlite_master ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	return names
}

func feedFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range entries {
		if strings.HasSuffix(de.Name(), ".json") {
			out = append(out, de.Name())
		}
	}
	return out
}

// TestPrune_CLI: prune refuses to pass the lowest cursor of the node
// databases it is given (read-only: it creates no table and no file), or to
// run without any unless --force; it reports usage errors with exit status
// 2; and once it prunes, a node below the retention is told so and
// producers continue above the old head.
func TestPrune_CLI(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	feedDir := filepath.Join(dir, "feed")
	sink, err := filesource.NewSink(feedDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	for i := range 5 {
		if _, err := sink.Append(ctx, controlevent.Event{EventID: fmt.Sprint("e", i), Type: "kv.put", CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	n1, n2 := filepath.Join(dir, "n1.db"), filepath.Join(dir, "n2.db")
	nodeDBAt(t, ctx, n1, 5)
	nodeDBAt(t, ctx, n2, 3)
	schema := schemaOf(t, n1)
	plain := filepath.Join(dir, "plain.db")
	pdb, err := sql.Open("sqlite", plain)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pdb.Exec(`CREATE TABLE other (x)`); err != nil {
		t.Fatal(err)
	}
	pdb.Close()
	missing := filepath.Join(dir, "missing.db")

	for _, tc := range []struct {
		name  string
		args  []string
		usage bool
		want  string
	}{
		{"NoFeedDir", []string{"--through", "3", "--db", n1}, true, "--feed-dir is required"},
		{"NoThrough", []string{"--feed-dir", feedDir, "--db", n1}, true, "--through is required"},
		{"ThroughZero", []string{"--feed-dir", feedDir, "--through", "0", "--db", n1}, true, "must be > 0"},
		{"ThroughNotANumber", []string{"--feed-dir", feedDir, "--through", "-1", "--db", n1}, true, "through"},
		{"Argument", []string{"--feed-dir", feedDir, "--through", "3", "extra"}, true, `unexpected argument "extra"`},
		{"NoNodes", []string{"--feed-dir", feedDir, "--through", "3"}, true, "--db"},
		{"MissingFeedDir", []string{"--feed-dir", filepath.Join(dir, "nope"), "--through", "3", "--force"}, false, "no such file or directory"},
		{"FeedDirIsAFile", []string{"--feed-dir", n1, "--through", "3", "--force"}, false, "not a directory"},
		{"BehindANode", []string{"--feed-dir", feedDir, "--through", "4", "--db", n1, "--db", n2}, false, n2 + " has applied the feed up to 3 only"},
		{"NotANodeDB", []string{"--feed-dir", feedDir, "--through", "3", "--db", plain}, false, "no controlfeed_cursor table"},
		{"MissingNodeDB", []string{"--feed-dir", feedDir, "--through", "3", "--db", missing}, false, "no such file or directory"},
		{"AboveHead", []string{"--feed-dir", feedDir, "--through", "9", "--force"}, false, "highest position taken in the directory is 5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := run(t, nil, "", append([]string{"prune"}, tc.args...)...)
			if err == nil || isUsage(err) != tc.usage || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("prune %q = %v (usage error: %v); want an error (usage: %v) containing %q", tc.args, err, isUsage(err), tc.usage, tc.want)
			}
		})
	}
	if got := feedFiles(t, feedDir); len(got) != 5 {
		t.Fatalf("refused prunes deleted files: %q left", got)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("prune created the missing node database")
	}
	if got := schemaOf(t, plain); !slices.Equal(got, []string{"other"}) {
		t.Errorf("prune changed the schema of a database that is not a node's: %q", got)
	}

	// Every given node has applied through 3, but no snapshot covers 3: a
	// new node could not join after the prune.
	_, _, err = run(t, nil, "", "prune", "--feed-dir", feedDir, "--through", "3", "--db", n1)
	if err == nil || !strings.Contains(err.Error(), "no snapshot is published") || !strings.Contains(err.Error(), "a new node could not join") {
		t.Fatalf("prune without a snapshot = %v; want a refusal naming the missing snapshot", err)
	}
	cat, err := filecatalog.New(feedDir)
	if err != nil {
		t.Fatal(err)
	}
	rec := snapshot.Record{Manifest: artifact.RefOf([]byte("m2")), ControlVersion: 2, Size: 1, CreatedAt: time.Now(), PublishedAt: time.Now()}
	if err := cat.Publish(ctx, rec); err != nil {
		t.Fatal(err)
	}
	_, _, err = run(t, nil, "", "prune", "--feed-dir", feedDir, "--through", "3", "--db", n1)
	if err == nil || !strings.Contains(err.Error(), "is at cursor 2") {
		t.Fatalf("prune through 3 with a snapshot at 2 = %v; want a refusal", err)
	}
	rec.Manifest, rec.ControlVersion = artifact.RefOf([]byte("m3")), 3
	if err := cat.Publish(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if got := feedFiles(t, feedDir); len(got) != 5 {
		t.Fatalf("refused prunes deleted files: %q left", got)
	}

	// A --db flag replaces CONTROLFEED_DB (n2, at 3, would refuse).
	out := mustRun(t, []string{"CONTROLFEED_DB=" + n2}, "", "prune", "--feed-dir", feedDir, "--through", "3", "--db", n1)
	if want := fmt.Sprintf("pruned %s through 3: deleted 3 event files; new events get positions above 5\n", feedDir); out != want {
		t.Errorf("prune printed %q, want %q", out, want)
	}
	if got := schemaOf(t, n1); !slices.Equal(got, schema) {
		t.Errorf("prune changed a node database's schema: %q, was %q", got, schema)
	}
	src, err := feed.Open(filesource.Name, feed.SourceConfig{FileDir: feedDir})
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(src)
	if _, err := src.Poll(ctx, 2); !errors.Is(err, feed.ErrCursorBehindRetention) {
		t.Fatalf("Poll(2) after prune through 3 = %v; want behind retention", err)
	}
	out = mustRun(t, nil, "", "prune", "--feed-dir", feedDir, "--through", "2", "--db", n1)
	if !strings.Contains(out, "already pruned through 3") {
		t.Errorf("second prune printed %q", out)
	}
	// Without --db, a covering snapshot lets it prune, with a warning.
	stdout, stderr, err := run(t, nil, "", "prune", "--feed-dir", feedDir, "--through", "3")
	if err != nil || !strings.Contains(stdout, "already pruned through 3") || !strings.Contains(stderr, "warning: no node database given") {
		t.Fatalf("prune without --db, snapshot at 3 = %v, %q, %q; want it done with a warning", err, stdout, stderr)
	}

	// --force prunes everything, with progress on stderr; positions go on.
	defer func(old int) { pruneProgressFrom = old }(pruneProgressFrom)
	pruneProgressFrom = 1
	stdout, stderr, err = run(t, nil, "", "prune", "--feed-dir", feedDir, "--through", "5", "--force")
	if err != nil {
		t.Fatalf("prune --force: %v\n%s", err, stderr)
	}
	if !strings.Contains(stdout, "deleted 2 event files") || !strings.Contains(stderr, "deleted 2 of 2 event files") {
		t.Errorf("prune --force printed %q, stderr %q", stdout, stderr)
	}
	if got := feedFiles(t, feedDir); len(got) != 0 {
		t.Fatalf("files left after pruning through the head: %q", got)
	}
	e, err := sink.Append(ctx, controlevent.Event{EventID: "after", Type: "kv.put", CreatedAt: time.Now()})
	if err != nil || e.ControlVersion != 6 {
		t.Fatalf("Append after pruning everything = %d, %v; want 6", e.ControlVersion, err)
	}
}
