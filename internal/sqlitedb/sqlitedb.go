// Package sqlitedb opens the SQLite databases controlfeed keeps its state in
// (a producer's outbox, a node's cursor, applied_events and data), with the
// settings every caller needs: the pure-Go modernc.org/sqlite driver, WAL
// journaling, a busy timeout so several processes can share a file,
// immediate transactions so writers queue instead of failing on upgrade, and
// an in-process write lock per file so that writers of one process queue in
// Go rather than in SQLite's sleeping busy handler.
package sqlitedb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"time"

	"modernc.org/sqlite"
)

// BusyTimeout is how long a statement waits for another connection's write
// lock before failing with SQLITE_BUSY.
const BusyTimeout = 10 * time.Second

// AutoCheckpointPages is the WAL size, in pages, at which a commit runs
// SQLite's automatic checkpoint itself (SQLite's default: 1000).
//
// Why raised: outbox.Pump.Run and applier.Applier.Run checkpoint the WAL in
// the background, off the commit path. With SQLite's 1000 pages, a producer
// at 1000 events/s (about 4 WAL pages per event with its write-backs) still
// crossed the threshold between two background checkpoints, and the commit
// that did then copied the WAL into the database and synced it, 5-90 ms on
// a shared disk, while the writers queued behind it (measured in the e2e
// benchmark, four runs each: producer commits over 5 ms 26 -> 3, together
// with the write lock below). The threshold stays as
// a backstop for a database no background checkpointer serves; its WAL then
// grows to about 40 MiB (4 KiB pages) between checkpoints.
const AutoCheckpointPages = 10000

// Open opens (creating if needed) the SQLite database at path and checks that
// it is usable.
//
// Write transactions (BeginTx without ReadOnly) begin with BEGIN IMMEDIATE
// and, within this process, queue in Go for the file: every *sql.DB Open
// returned for the same path shares one lock, taken by BeginTx and released
// when Commit or Rollback returns, so a writer starts as soon as the one
// before it ends instead of polling in SQLite's busy handler. A BeginTx that
// waits BusyTimeout for it fails with an error wrapping ErrWriteLockTimeout;
// ctx ends the wait too. Do not begin a second write transaction on the
// same file while holding one: it waits BusyTimeout and fails, as it would
// in SQLite. Read-only transactions, statements outside transactions and
// other processes are not affected.
//
// Checkpoints: a commit checkpoints the WAL only past AutoCheckpointPages;
// long-running writers are expected to checkpoint in the background (the
// pump and the applier do).
//
// Durability: WAL with synchronous=NORMAL. A committed transaction survives a
// crash of the process (kill -9); after a power loss the last few commits may
// be rolled back, atomically, leaving a consistent earlier state. That is
// safe for both roles because nothing leaves a database before it is durable:
// a producer's pump fsyncs the WAL after reading pending rows and before
// publishing them (package outbox), and a node that loses its last commits
// polls from its older cursor and applies those events again.
func Open(ctx context.Context, path string) (*sql.DB, error) {
	if path == "" {
		return nil, fmt.Errorf("sqlitedb: open: empty database path (set --db)")
	}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(ON)")
	q.Add("_pragma", fmt.Sprintf("wal_autocheckpoint(%d)", AutoCheckpointPages))
	q.Set("_txlock", "immediate")
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	base, err := sqlite.NewConnector(dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlitedb: open %s: %w", path, err)
	}
	key, err := filepath.Abs(path)
	if err != nil {
		key = path
	}
	db := sql.OpenDB(&connector{base: base, lock: acquireLock(key)})
	// Two processes creating the same database at once (a producer's serve
	// and its first "kv put") race to switch it to WAL, and SQLite answers
	// the loser SQLITE_BUSY at once, without its busy handler: retry for
	// up to BusyTimeout, as a busy handler would.
	deadline := time.Now().Add(BusyTimeout)
	for {
		err := db.PingContext(ctx)
		if err == nil {
			return db, nil
		}
		if !isBusy(err) || time.Now().After(deadline) || ctx.Err() != nil {
			db.Close()
			return nil, fmt.Errorf("sqlitedb: open %s: %w", path, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// isBusy reports whether err is SQLite's BUSY (5) or LOCKED (6), extended
// codes included.
func isBusy(err error) bool {
	var c interface{ Code() int }
	if errors.As(err, &c) {
		code := c.Code() & 0xff
		return code == 5 || code == 6
	}
	return false
}
