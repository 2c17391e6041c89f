package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// SchemaComponent is the component name under which Migrate records the
// outbox schema version in controlfeed_schema.
const SchemaComponent = "outbox"

// SchemaVersion is the outbox schema version this package creates and
// understands.
const SchemaVersion = 2

// Migrate creates or upgrades the outbox schema to SchemaVersion. It is
// idempotent, and safe to call from several processes at start-up: the
// upgrade runs in one transaction that first takes the database's write lock,
// so concurrent callers queue and all but the first find nothing to do. A
// database whose recorded version is newer than SchemaVersion (written by a
// newer binary) is an error and is left untouched.
func Migrate(ctx context.Context, db *sql.DB) error {
	if db == nil {
		return errors.New("outbox: migrate: nil *sql.DB")
	}
	dia := dialectOf(db)
	if dia.lockMigration == "" {
		if _, err := db.ExecContext(ctx, dia.createSchemaTable); err != nil {
			return fmt.Errorf("outbox: migrate: create controlfeed_schema: %w", err)
		}
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("outbox: migrate: begin: %w", err)
	}
	defer tx.Rollback()
	if dia.lockMigration != "" {
		if _, err := tx.ExecContext(ctx, dia.lockMigration); err != nil {
			return fmt.Errorf("outbox: migrate: lock: %w", err)
		}
		if _, err := tx.ExecContext(ctx, dia.createSchemaTable); err != nil {
			return fmt.Errorf("outbox: migrate: create controlfeed_schema: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, dia.claimSchemaRow, SchemaComponent); err != nil {
		return fmt.Errorf("outbox: migrate: lock schema row %q: %w", SchemaComponent, err)
	}
	var have int
	if err := tx.QueryRowContext(ctx, dia.selectSchemaVersion, SchemaComponent).Scan(&have); err != nil {
		return fmt.Errorf("outbox: migrate: read schema version of %q: %w", SchemaComponent, err)
	}
	want := SchemaVersion
	if have > want {
		return fmt.Errorf("outbox: migrate: database has outbox schema version %d, newer than this program's %d; upgrade the program", have, want)
	}
	if have == want {
		return nil // Rollback releases the lock; nothing changed.
	}
	for v := have; v < want; v++ {
		for i, stmt := range dia.migrations[v] {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("outbox: migrate: version %d statement %d: %w", v+1, i+1, err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, dia.updateSchemaVersion, want, SchemaComponent); err != nil {
		return fmt.Errorf("outbox: migrate: record schema version %d: %w", want, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("outbox: migrate: commit version %d: %w", want, err)
	}
	return nil
}
