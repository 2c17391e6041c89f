// Package dbrole records what a controlfeed database is for: a producer's
// (it has an outbox, drained by a pump into a feed) or a fleet node's (an
// applier applies a feed to it). The role is one row in the table
// controlfeed_role, written the first time a process opens the database in
// a role (controlfeed serve does it through internal/node), and never
// changed by controlfeed afterwards.
//
// # Why
//
// A node's replicated tables (controlfeed_kv) must hold exactly what its
// feed says. A local write there (controlfeed kv put --db node.db) makes the
// node differ from its producer, and the outbox row it queues is never
// published because a node runs no pump. Likewise a database that is
// drained as a producer by one process and fed as a node by another mixes
// two histories in one table. Recording the role lets both mistakes be
// refused before they change anything: kv.Put and kv.Delete refuse a node's
// database (CheckLocalWrite), and Record refuses to open a database in the
// other role.
//
// There is no relay role: the kv handlers apply a feed without appending to
// the outbox, so one database cannot republish what it applies. A relay is a
// node database plus a separate producer database written by the
// application.
//
// # Changing a role
//
// On purpose only, by hand: a database whose role is wrong (for example a
// copy of a producer's database meant to become a node) is fixed by deleting
// the row, "DELETE FROM controlfeed_role", with the sqlite3 shell while no
// controlfeed process uses it; the next serve records the role it opens it
// in. A database with no row (created before roles existed, or used only by
// kv commands and single-node serve) takes the role of the first serve that
// runs a pump or an applier on it.
//
// A producer's database records one more thing, in package outbox rather
// than here (it holds on PostgreSQL too): the artifact store its pump
// publishes references into, so that a write into another store is refused
// (outbox.RecordArtifactStore, outbox.CheckArtifactStore).
//
// # Concurrency and crashes
//
// Record runs in one transaction: of two processes racing to record
// different roles on a new database, one wins and the other gets ErrConflict.
// A crash before the commit records nothing. Get and CheckLocalWrite only
// read, and never create the table.
//
// # Errors
//
// Errors begin with "dbrole:" and the operation. A refusal wraps
// ErrNodeDatabase or ErrConflict and says what to do.
package dbrole

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Role is what a database is for. The zero value, None, means no role is
// recorded.
type Role string

// The roles.
const (
	// None: no role recorded yet.
	None Role = ""
	// Producer: the database has an outbox that a pump publishes.
	Producer Role = "producer"
	// Node: an applier applies a feed to the database.
	Node Role = "node"
)

// String returns the role's name, or "none".
func (r Role) String() string {
	if r == None {
		return "none"
	}
	return string(r)
}

// Sentinel errors of the refusals.
var (
	// ErrNodeDatabase is wrapped by CheckLocalWrite's error: the database
	// is a node's, and local writes to its replicated tables are refused.
	ErrNodeDatabase = errors.New("a node's database: local writes to replicated tables are refused")
	// ErrConflict is wrapped by Record's error when the database already
	// has another role.
	ErrConflict = errors.New("database already has another role")
)

// Table is the name of the table the role is recorded in.
const Table = "controlfeed_role"

// Querier is what Get and CheckLocalWrite read through: *sql.DB, *sql.Conn
// or *sql.Tx.
type Querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Get returns the recorded role of the database q reads, None if none is
// recorded or the table does not exist. It only reads (SQLite).
func Get(ctx context.Context, q Querier) (Role, error) {
	var n int
	if err := q.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, Table).Scan(&n); err != nil {
		return None, fmt.Errorf("dbrole: get: %w", err)
	}
	if n == 0 {
		return None, nil
	}
	var r string
	err := q.QueryRowContext(ctx, `SELECT role FROM `+Table+` WHERE id = 1`).Scan(&r)
	if errors.Is(err, sql.ErrNoRows) {
		return None, nil
	}
	if err != nil {
		return None, fmt.Errorf("dbrole: get: %w", err)
	}
	return Role(r), nil
}

// CheckLocalWrite returns nil unless the database is a node's, in which
// case it returns an error wrapping ErrNodeDatabase that tells the caller to
// write on the producer's database. Call it before writing a replicated
// table outside an applier (kv.Put and kv.Delete do, inside their
// transaction too). It only reads.
func CheckLocalWrite(ctx context.Context, q Querier) error {
	r, err := Get(ctx, q)
	if err != nil {
		return err
	}
	if r == Node {
		return fmt.Errorf("dbrole: this is a node's database (it applies a feed): a local write would make it differ from its producer and would never be published; write on the producer's database instead: %w", ErrNodeDatabase)
	}
	return nil
}

// Check returns nil if the database may be opened as role: no role is
// recorded yet, or the same one. Otherwise it returns an error wrapping
// ErrConflict naming both roles. It only reads, so a caller can refuse
// before it migrates anything.
func Check(ctx context.Context, q Querier, role Role) error {
	cur, err := Get(ctx, q)
	if err != nil {
		return err
	}
	return conflict(cur, role)
}

func conflict(cur, want Role) error {
	if cur == None || cur == want {
		return nil
	}
	return fmt.Errorf("dbrole: this database is recorded as a %s's database and cannot be opened as a %s's (%s): use the %s's own database, "+
		"or, if this copy really is to become a %s's, delete its role with the sqlite3 shell (DELETE FROM %s) while nothing uses it: %w",
		cur, want, howOpened(want), want, want, Table, ErrConflict)
}

func howOpened(r Role) string {
	switch r {
	case Producer:
		return "a pump publishing its outbox"
	case Node:
		return "an applier applying a feed"
	}
	return string(r)
}

// Record records role for db if none is recorded yet, creating the table if
// needed, and returns nil if it is recorded now (by this call or before).
// If another role is recorded it changes nothing and returns Check's error.
// role must be Producer or Node.
func Record(ctx context.Context, db *sql.DB, role Role) (err error) {
	if role != Producer && role != Node {
		return fmt.Errorf("dbrole: record: unknown role %q: want %q or %q", role, Producer, Node)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("dbrole: record %s: begin: %w", role, err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+Table+` (
		id          INTEGER PRIMARY KEY CHECK (id = 1),
		role        TEXT    NOT NULL,
		recorded_at TEXT    NOT NULL
	)`); err != nil {
		return fmt.Errorf("dbrole: record %s: create %s: %w", role, Table, err)
	}
	cur, err := Get(ctx, tx)
	if err != nil {
		return err
	}
	if err := conflict(cur, role); err != nil {
		return err
	}
	if cur == role {
		return tx.Rollback()
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+Table+` (id, role, recorded_at) VALUES (1, ?, ?)`,
		string(role), time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
		return fmt.Errorf("dbrole: record %s: %w", role, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("dbrole: record %s: commit: %w", role, err)
	}
	return nil
}
