// Package sqlitedb opens the SQLite databases controlfeed keeps its state in
// (a producer's outbox, a node's cursor, applied_events and data), with the
// settings every caller needs: the pure-Go modernc.org/sqlite driver, WAL
// journaling, a busy timeout so several processes can share a file, and
// immediate transactions so writers queue instead of failing on upgrade.
package sqlitedb

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// BusyTimeout is how long a statement waits for another connection's write
// lock before failing with SQLITE_BUSY.
const BusyTimeout = 10 * time.Second

// Open opens (creating if needed) the SQLite database at path and checks that
// it is usable.
//
// Durability: WAL with synchronous=NORMAL. A committed transaction survives a
// crash of the process (kill -9); after a power loss the last few commits may
// be rolled back, atomically, leaving a consistent earlier state.
func Open(ctx context.Context, path string) (*sql.DB, error) {
	if path == "" {
		return nil, fmt.Errorf("sqlitedb: open: empty database path (set --db)")
	}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(ON)")
	q.Set("_txlock", "immediate")
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlitedb: open %s: %w", path, err)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlitedb: open %s: %w", path, err)
	}
	return db, nil
}
