package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/feed/filesource"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/snapshot"
	"github.com/controlfeed/controlfeed/snapshot/filecatalog"
)

// pruneProgressFrom is the number of files to delete from which prune
// reports its progress on stderr (a variable for tests).
var pruneProgressFrom = 10_000

var pruneCmd = &command{
	name:    "prune",
	summary: "delete a file feed's oldest events, recording the retention",
	details: `Deletes the events at positions up to and including --through from the file
feed in --feed-dir. It first records the retention in the directory's prune
marker (.pruned, written atomically under the directory's lock): from then on
a node whose cursor is below --through is told it is behind the feed's
retention (and must be re-bootstrapped) instead of missing events silently,
and producers keep numbering above every position ever used, even once every
file is gone. Then it deletes the event files at or below --through, under
the lock in chunks, reporting progress on stderr when there are many.

How it decides that pruning is safe: it opens each node database given with
--db (repeat the flag, one per node) read-only, reads the node's cursor (the
last position it applied or skipped) and refuses if --through is above the
lowest cursor. It writes nothing to those databases. It also reads the
feed's latest published snapshot (.snapshots/latest.json, see "controlfeed
snapshot publish") and refuses unless that snapshot's cursor is at or after
--through: otherwise a new node, which starts from the latest snapshot or
from position 1, would find the events it needs deleted and could never
join. Without --db it sees no node: it refuses, unless such a snapshot
exists; it then prunes and warns that nodes below --through must restore
the snapshot (serve --bootstrap-when-behind does it). --force prunes
anyway.

It also refuses, changing nothing, when --feed-dir is not a directory,
--through is 0 or above the feed's highest position, the prune marker is
unreadable, or a file's position cannot be read (fix or remove it first).
Pruning through a position already pruned only deletes files an interrupted
prune left behind.`,
	example:  `controlfeed prune --feed-dir /var/lib/cf/feed --through 100000 --db /srv/node1.db --db /srv/node2.db`,
	settings: []string{"feed-dir", "through", "db", "force", "log-format", "log-level"},
	override: map[string]flagHelp{
		"db": {usage: "node database `FILE` whose cursor bounds --through (repeat for each node; opened read-only)"},
	},
}

func (m *Main) runPrune(ctx context.Context, args []string) error {
	var s settings
	pos, err := pruneCmd.parse(m, &s, args)
	if err != nil {
		return helpOK(err)
	}
	if len(pos) > 0 {
		return usageErrorf("controlfeed prune: unexpected argument %q (see --help)", pos[0])
	}
	log, err := s.logger(m.Stderr)
	if err != nil {
		return err
	}
	if s.FeedDir == "" {
		return usageErrorf("controlfeed prune: --feed-dir is required (or CONTROLFEED_FEED_DIR)")
	}
	if s.Through == 0 {
		return usageErrorf("controlfeed prune: --through is required and must be > 0 (the highest position to delete)")
	}
	if info, err := os.Stat(s.FeedDir); err != nil {
		return fmt.Errorf("controlfeed prune: feed directory: %w", err)
	} else if !info.IsDir() {
		return fmt.Errorf("controlfeed prune: feed directory %s is not a directory", s.FeedDir)
	}
	for _, db := range s.DBs {
		if node.IsPostgresURL(db) {
			return usageErrorf("controlfeed prune: --db %s is a PostgreSQL URL: prune checks nodes' SQLite database files (a producer's database is not a node's)", node.RedactDB(db))
		}
	}
	if err := checkPruneSafe(ctx, m.Stderr, s.FeedDir, s.DBs, s.Through, s.Force); err != nil {
		return err
	}
	opts := &filesource.PruneOptions{Logger: log, Progress: func(done, total int) {
		if total >= pruneProgressFrom {
			fmt.Fprintf(m.Stderr, "controlfeed prune: deleted %d of %d event files\n", done, total)
		}
	}}
	res, err := filesource.Prune(ctx, s.FeedDir, s.Through, opts)
	if err != nil {
		return fmt.Errorf("controlfeed prune: %w", err)
	}
	if res.Previous >= s.Through {
		fmt.Fprintf(m.Stdout, "%s was already pruned through %d; deleted %d event files left behind; new events get positions above %d\n",
			s.FeedDir, res.PrunedThrough, res.Deleted, res.HighWater)
		return nil
	}
	fmt.Fprintf(m.Stdout, "pruned %s through %d: deleted %d event files; new events get positions above %d\n",
		s.FeedDir, res.PrunedThrough, res.Deleted, res.HighWater)
	return nil
}

// checkPruneSafe refuses, unless force, a prune through a position that
// the feed's latest published snapshot does not cover (a new node could
// not join) or that some node of dbs has not applied yet; without dbs it
// refuses unless the snapshot covers, and then warns on stderr.
func checkPruneSafe(ctx context.Context, stderr io.Writer, feedDir string, dbs []string, through uint64, force bool) error {
	if force {
		return nil
	}
	covered, have := snapshotCovers(ctx, feedDir, through)
	if len(dbs) == 0 {
		if !covered {
			return usageErrorf("controlfeed prune: no node database given, so prune cannot tell whether every node has applied the events through %d, and %s; "+
				"give each node's database with --db (repeat the flag), publish a snapshot at %d or later, or use --force", through, have, through)
		}
		fmt.Fprintf(stderr, "controlfeed prune: warning: no node database given (--db): a node whose cursor is below %d will be behind the feed's retention "+
			"and must restore the latest snapshot (%s): serve --bootstrap-when-behind does it at start-up\n", through, have)
		return nil
	}
	if err := checkNodesApplied(ctx, dbs, through); err != nil {
		return err
	}
	if !covered {
		return fmt.Errorf("controlfeed prune: %s, so after pruning through %d a new node could not join (it would replay from the start and find events deleted): "+
			"publish a snapshot of an up-to-date node first (controlfeed snapshot publish --db NODE.db --feed-dir %s), or use --force", have, through, feedDir)
	}
	return nil
}

// snapshotCovers reports whether the file feed's latest published snapshot
// is at through or later, and describes it.
func snapshotCovers(ctx context.Context, feedDir string, through uint64) (bool, string) {
	cat, err := filecatalog.New(feedDir)
	if err != nil {
		return false, fmt.Sprintf("the feed's snapshot catalog cannot be read (%v)", err)
	}
	rec, err := cat.Latest(ctx)
	if errors.Is(err, snapshot.ErrNoSnapshot) {
		return false, "no snapshot is published for the feed"
	}
	if err != nil {
		return false, fmt.Sprintf("the feed's latest snapshot cannot be read (%v)", err)
	}
	desc := fmt.Sprintf("the latest published snapshot %s is at cursor %d", rec.Manifest, rec.ControlVersion)
	return rec.ControlVersion >= through, desc
}

// checkNodesApplied refuses a prune through a position some node of dbs has
// not applied yet.
func checkNodesApplied(ctx context.Context, dbs []string, through uint64) error {
	for _, path := range dbs {
		cursor, err := readNodeCursor(ctx, path)
		if err != nil {
			return fmt.Errorf("controlfeed prune: %w", err)
		}
		if cursor < through {
			return fmt.Errorf("controlfeed prune: the node of %s has applied the feed up to %d only; pruning through %d would put it behind the feed's retention "+
				"(it would need a re-bootstrap): wait until it has caught up, prune through %d or less, or use --force", path, cursor, through, cursor)
		}
	}
	return nil
}

// readNodeCursor returns the cursor of the node database at path, opened
// read-only: it creates nothing, not even a missing file.
func readNodeCursor(ctx context.Context, path string) (uint64, error) {
	if _, err := os.Stat(path); err != nil {
		return 0, fmt.Errorf("node database: %w", err)
	}
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?mode=ro&_pragma=busy_timeout(10000)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return 0, fmt.Errorf("node database %s: %w", path, err)
	}
	defer db.Close()
	var tables int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'controlfeed_cursor'`).Scan(&tables); err != nil {
		return 0, fmt.Errorf("node database %s: %w", path, err)
	}
	if tables == 0 {
		return 0, fmt.Errorf("node database %s has no controlfeed_cursor table: is it the database of a node that applies this feed?", path)
	}
	cursor, err := applier.ReadCursor(ctx, db)
	if err != nil {
		return 0, fmt.Errorf("node database %s: %w", path, errors.Unwrap(err))
	}
	return cursor, nil
}
