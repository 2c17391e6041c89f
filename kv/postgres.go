package kv

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/controlfeed/controlfeed/dbrole"
)

// PostgreSQL: a producer's database may be PostgreSQL (opened through pgx's
// database/sql driver; see outbox.IsPostgres). Put, Delete, Get, List and
// Digest then use the statements below; the handlers (the node side) stay
// SQLite, as nodes do. The table has the same columns, value as BYTEA, and
// keys are ordered byte-wise (COLLATE "C") so that List and Digest agree
// with a SQLite node's whatever the database's collation.

// pgMigrationLock queues concurrent Migrate calls on one PostgreSQL
// database (a transaction-scoped advisory lock; first key 1668247158, next
// to the outbox's).
const pgMigrationLock = `SELECT pg_advisory_xact_lock(1668247158, 0)`

// pgMigrations is migrations in PostgreSQL's types.
var pgMigrations = [][]string{
	{
		`CREATE TABLE IF NOT EXISTS controlfeed_kv (
			key        TEXT   PRIMARY KEY,
			value      BYTEA  NOT NULL,
			version    BIGINT NOT NULL,
			updated_at TEXT   NOT NULL
		)`,
	},
}

const (
	pgListQuery   = `SELECT key, value, version, updated_at FROM controlfeed_kv ORDER BY key COLLATE "C"`
	pgDigestQuery = `SELECT key, value, version FROM controlfeed_kv ORDER BY key COLLATE "C"`
)

// pgWriteRow sets key's row to value with its version bumped (1 for a new
// key) in one statement, which waits for a concurrent writer of the key to
// commit, and returns the new version.
func pgWriteRow(ctx context.Context, tx *sql.Tx, key string, value []byte, now time.Time) (int64, error) {
	var v int64
	err := tx.QueryRowContext(ctx, `INSERT INTO controlfeed_kv (key, value, version, updated_at) VALUES ($1, $2, 1, $3)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = controlfeed_kv.version + 1, updated_at = excluded.updated_at
		RETURNING version`, key, value, formatTime(now)).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("write row: %w", err)
	}
	return v, nil
}

// pgDeleteRow deletes key's row and returns the version it had; ok is false
// when there was none.
func pgDeleteRow(ctx context.Context, tx *sql.Tx, key string) (version int64, ok bool, err error) {
	err = tx.QueryRowContext(ctx, `DELETE FROM controlfeed_kv WHERE key = $1 RETURNING version`, key).Scan(&version)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("delete row: %w", err)
	}
	return version, true, nil
}

// checkLocalWrite is dbrole.CheckLocalWrite on SQLite. A PostgreSQL
// database is always a producer's (nodes are SQLite), so there is nothing
// to check.
func checkLocalWrite(ctx context.Context, pg bool, q dbrole.Querier) error {
	if pg {
		return nil
	}
	return dbrole.CheckLocalWrite(ctx, q)
}
