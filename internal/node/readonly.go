package node

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
	"github.com/controlfeed/controlfeed/kv"
	"github.com/controlfeed/controlfeed/outbox"
)

// ErrNotControlfeed is wrapped by the error of OpenDBReadOnly for a database
// that has none of controlfeed's tables: another program's database, an
// empty file, or a mistyped --db.
var ErrNotControlfeed = errors.New("not a controlfeed database")

// OpenDBReadOnly opens the existing controlfeed database at path for reading
// only (sqlitedb.OpenReadOnly): it never creates the file, never migrates it
// and never changes its journal mode, so a command that only reads leaves
// any file as it found it. It is safe while another process runs a node on
// the database. The caller closes it.
//
// It fails, after closing the database, when the file does not exist
// (wrapping fs.ErrNotExist), when it is not an SQLite database, when it has
// none of controlfeed's tables (wrapping ErrNotControlfeed), and when its
// schema is not the one this program reads (older: serve migrates it; newer:
// upgrade the program).
func OpenDBReadOnly(ctx context.Context, path string) (*sql.DB, error) {
	db, err := sqlitedb.OpenReadOnly(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	if err := checkSchema(ctx, db, path); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// schemaPart is one component's schema, as OpenDB's migrations record it.
type schemaPart struct {
	name  string // for messages
	table string // where the version is recorded
	query string // reads the version
	want  int    // the version this program reads
}

func schemaParts() []schemaPart {
	return []schemaPart{
		{"outbox", "controlfeed_schema",
			`SELECT version FROM controlfeed_schema WHERE component = '` + outbox.SchemaComponent + `'`, outbox.SchemaVersion},
		{"applier", "controlfeed_applier_schema",
			`SELECT version FROM controlfeed_applier_schema WHERE id = 1`, applier.SchemaVersion()},
		{"kv", "controlfeed_kv_schema",
			`SELECT version FROM controlfeed_kv_schema WHERE id = 1`, kv.SchemaVersion()},
	}
}

// checkSchema reports whether db holds the schema OpenDB creates, at the
// versions this program reads, without writing anything.
func checkSchema(ctx context.Context, db *sql.DB, path string) error {
	parts := schemaParts()
	have := make([]int, len(parts))
	found := 0
	for i, p := range parts {
		var n int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, p.table).Scan(&n); err != nil {
			return fmt.Errorf("node: open %s read-only: read its tables: %w", path, err)
		}
		if n == 0 {
			continue
		}
		found++
		err := db.QueryRowContext(ctx, p.query).Scan(&have[i])
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("node: open %s read-only: read the %s schema version: %w", path, p.name, err)
		}
	}
	if found == 0 {
		return fmt.Errorf("node: %w: %s (it has none of controlfeed's tables, and commands that only read never add them: check --db)",
			ErrNotControlfeed, path)
	}
	for i, p := range parts {
		switch {
		case have[i] < p.want:
			return fmt.Errorf("node: open %s read-only: its %s schema is at version %d, this program reads version %d: "+
				"start controlfeed serve on it once to migrate it, then retry", path, p.name, have[i], p.want)
		case have[i] > p.want:
			return fmt.Errorf("node: open %s read-only: its %s schema is at version %d, newer than this program's %d: upgrade the program",
				path, p.name, have[i], p.want)
		}
	}
	return nil
}
