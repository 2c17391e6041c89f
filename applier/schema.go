package applier

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/controlfeed/controlfeed/trust"
)

// migrations are applied in order; migrations[i] brings the schema to
// version i+1. Never edit a released entry: append a new one.
var migrations = [][]string{
	{
		`CREATE TABLE controlfeed_cursor (
			id              INTEGER PRIMARY KEY CHECK (id = 1),
			control_version INTEGER NOT NULL CHECK (control_version >= 0),
			updated_at      TEXT    NOT NULL
		)`,
		`INSERT INTO controlfeed_cursor (id, control_version, updated_at) VALUES (1, 0, '')`,
		`CREATE TABLE controlfeed_applied_events (
			event_id        TEXT    PRIMARY KEY,
			control_version INTEGER NOT NULL,
			type            TEXT    NOT NULL,
			applied_at      TEXT    NOT NULL,
			outcome         TEXT    NOT NULL CHECK (outcome IN ('applied', 'skipped'))
		)`,
		`CREATE TABLE controlfeed_halt (
			id              INTEGER PRIMARY KEY CHECK (id = 1),
			event_id        TEXT    NOT NULL,
			control_version INTEGER NOT NULL,
			type            TEXT    NOT NULL,
			error           TEXT    NOT NULL,
			attempts        INTEGER NOT NULL,
			since           TEXT    NOT NULL,
			last_attempt    TEXT    NOT NULL
		)`,
	},
	{
		// Version 2: the digest of each applied event, compared when its
		// EventID is delivered again, and the conflicts found that way.
		`ALTER TABLE controlfeed_applied_events ADD COLUMN digest TEXT NOT NULL DEFAULT ''`,
		`CREATE TABLE controlfeed_conflicts (
			control_version INTEGER PRIMARY KEY,
			event_id        TEXT    NOT NULL,
			digest          TEXT    NOT NULL,
			recorded_digest TEXT    NOT NULL,
			detected_at     TEXT    NOT NULL,
			resolution      TEXT    NOT NULL DEFAULT '' CHECK (resolution IN ('', 'skipped'))
		)`,
	},
	{
		// Version 3: the state digest, stored with the cursor, and its
		// checkpoints (see digest.go); backfillStateDigest computes them
		// for the events applied before.
		`ALTER TABLE controlfeed_cursor ADD COLUMN state_digest TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE controlfeed_cursor ADD COLUMN state_digest_cv INTEGER NOT NULL DEFAULT 0`,
		`CREATE TABLE controlfeed_digest_checkpoints (
			control_version INTEGER PRIMARY KEY,
			state_digest    TEXT    NOT NULL,
			recorded_at     TEXT    NOT NULL
		)`,
	},
	{
		// The trust chain head (package trust) moves with the cursor;
		// a security halt is a halt with its reason.
		`ALTER TABLE controlfeed_cursor ADD COLUMN trust_seq INTEGER NOT NULL DEFAULT 0`,
		`ALTER TABLE controlfeed_cursor ADD COLUMN trust_digest TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE controlfeed_halt ADD COLUMN security TEXT NOT NULL DEFAULT ''`,
		`CREATE TABLE controlfeed_trust_keys (
			kid        TEXT    PRIMARY KEY,
			public_key TEXT    NOT NULL,
			added_cv   INTEGER NOT NULL,
			revoked_cv INTEGER NOT NULL DEFAULT 0
		)`,
	},
}

// migrationSteps run after the statements of the schema version they are
// keyed by, in the same transaction: data migrations SQL cannot express.
var migrationSteps = map[int]func(context.Context, *sql.Tx) error{
	3: backfillStateDigest,
}

// Migrate creates or upgrades the applier's tables (controlfeed_cursor,
// controlfeed_applied_events, controlfeed_halt, controlfeed_conflicts,
// controlfeed_digest_checkpoints) in db; the upgrade to version 3 computes
// the state digest of the events applied so far (time proportional to
// controlfeed_applied_events). It is idempotent and
// safe to call from several processes at once: each upgrade step runs in one
// transaction together with the recorded version, in
// controlfeed_applier_schema. It refuses a database whose schema is newer
// than this binary knows.
func Migrate(ctx context.Context, db *sql.DB) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("applier: migrate: begin: %w", err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS controlfeed_applier_schema (
		id      INTEGER PRIMARY KEY CHECK (id = 1),
		version INTEGER NOT NULL
	)`); err != nil {
		return fmt.Errorf("applier: migrate: create controlfeed_applier_schema: %w", err)
	}
	var cur int
	err = tx.QueryRowContext(ctx, `SELECT version FROM controlfeed_applier_schema WHERE id = 1`).Scan(&cur)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("applier: migrate: read schema version: %w", err)
	}
	if cur > len(migrations) {
		return fmt.Errorf("applier: migrate: database schema version %d is newer than this program's %d; upgrade the program", cur, len(migrations))
	}
	for v := cur; v < len(migrations); v++ {
		for _, stmt := range migrations[v] {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("applier: migrate to schema version %d: %w", v+1, err)
			}
		}
		if step := migrationSteps[v+1]; step != nil {
			if err := step(ctx, tx); err != nil {
				return fmt.Errorf("applier: migrate to schema version %d: %w", v+1, err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO controlfeed_applier_schema (id, version) VALUES (1, ?)
		ON CONFLICT (id) DO UPDATE SET version = excluded.version`, len(migrations)); err != nil {
		return fmt.Errorf("applier: migrate: record schema version: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("applier: migrate: commit: %w", err)
	}
	return nil
}

// SchemaVersion returns the version of the applier schema this package
// creates and understands, the one Migrate records in
// controlfeed_applier_schema.
func SchemaVersion() int { return len(migrations) }

// Querier is what ReadCursor needs: *sql.DB, *sql.Tx and *sql.Conn all
// satisfy it.
type Querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// ReadCursor returns the node's cursor: the highest ControlVersion the
// applier has moved past (0 before the first event). Reading through a *sql.Tx
// sees that transaction's view.
func ReadCursor(ctx context.Context, q Querier) (uint64, error) {
	var cv int64
	if err := q.QueryRowContext(ctx, `SELECT control_version FROM controlfeed_cursor WHERE id = 1`).Scan(&cv); err != nil {
		return 0, fmt.Errorf("applier: read cursor: %w (has Migrate run?)", err)
	}
	return uint64(cv), nil
}

// SetCursor sets the node's cursor inside tx. It is meant for bootstrapping a
// node from a snapshot: restore the snapshot's rows and set the cursor to the
// snapshot's ControlVersion in one transaction, then start (or let the running
// applier resume) from there. It does not touch controlfeed_applied_events
// nor the state digest, which then no longer covers every position up to
// the cursor: restore a whole node database (package snapshot) to keep it
// comparable with other nodes'.
// It must not be used while an applier is mid-batch on the same database;
// SQLite's write lock serialises the two, so the later commit wins.
func SetCursor(ctx context.Context, tx *sql.Tx, controlVersion uint64) error {
	v, err := toInt64(controlVersion)
	if err != nil {
		return fmt.Errorf("applier: set cursor: %w", err)
	}
	res, err := tx.ExecContext(ctx, `UPDATE controlfeed_cursor SET control_version = ?, updated_at = ? WHERE id = 1`, v, formatTime(time.Now()))
	if err != nil {
		return fmt.Errorf("applier: set cursor to %d: %w", controlVersion, err)
	}
	if n, err := res.RowsAffected(); err == nil && n != 1 {
		return fmt.Errorf("applier: set cursor to %d: cursor row missing (has Migrate run?)", controlVersion)
	}
	return nil
}

func toInt64(cv uint64) (int64, error) {
	if cv > math.MaxInt64 {
		return 0, fmt.Errorf("control version %d does not fit SQLite's signed 64-bit integer", cv)
	}
	return int64(cv), nil
}

const timeFormat = time.RFC3339Nano

func formatTime(t time.Time) string { return t.UTC().Format(timeFormat) }

func parseTime(s string) time.Time {
	t, err := time.Parse(timeFormat, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// ReadTrustHead returns the chain head (package trust) of the last signed
// event this node applied or skipped, stored with the cursor; the zero Head
// when the node has applied no signed event (or runs without trusted keys).
func ReadTrustHead(ctx context.Context, q Querier) (trust.Head, error) {
	var h trust.Head
	var seq int64
	if err := q.QueryRowContext(ctx, `SELECT trust_seq, trust_digest FROM controlfeed_cursor WHERE id = 1`).Scan(&seq, &h.Digest); err != nil {
		return h, fmt.Errorf("applier: read trust chain head: %w (has Migrate run?)", err)
	}
	h.Seq = uint64(seq)
	return h, nil
}
