package snapshot

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/kv"
	"github.com/controlfeed/controlfeed/outbox"

	_ "modernc.org/sqlite" // the "sqlite" driver for read-only and in-memory opens
)

// A component is one family of controlfeed tables whose schema version a
// manifest records: the name in Manifest.Schemas, the table holding its
// version, the query reading it, and whether a node database must have it.
type component struct {
	name     string
	table    string
	query    string
	required bool
}

// Component names used as keys of Manifest.Schemas.
const (
	// ComponentApplier is the applier's tables (cursor, applied events,
	// halt, conflicts), recorded in controlfeed_applier_schema. Every
	// snapshot has it.
	ComponentApplier = "applier"
	// ComponentKV is the replicated key/value table, recorded in
	// controlfeed_kv_schema, when present.
	ComponentKV = "kv"
	// ComponentOutbox is the producer outbox, recorded in
	// controlfeed_schema, when present.
	ComponentOutbox = "outbox"
)

var components = []component{
	{ComponentApplier, "controlfeed_applier_schema", `SELECT version FROM controlfeed_applier_schema WHERE id = 1`, true},
	{ComponentKV, "controlfeed_kv_schema", `SELECT version FROM controlfeed_kv_schema WHERE id = 1`, false},
	{ComponentOutbox, "controlfeed_schema", `SELECT version FROM controlfeed_schema WHERE component = 'outbox'`, false},
}

// nodeTables must exist in every snapshot's database.
var nodeTables = []string{"controlfeed_cursor", "controlfeed_applied_events", "controlfeed_applier_schema"}

// querier is satisfied by *sql.DB, *sql.Conn and *sql.Tx.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// hasTable reports whether db has a table named name.
func hasTable(ctx context.Context, q querier, name string) (bool, error) {
	var n int
	if err := q.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?`, name).Scan(&n); err != nil {
		return false, fmt.Errorf("look for table %s: %w", name, err)
	}
	return n > 0, nil
}

// readSchemas returns the schema versions of the components present in db.
// A component whose version table exists but has no row is absent.
func readSchemas(ctx context.Context, q querier) (map[string]int, error) {
	out := map[string]int{}
	for _, c := range components {
		ok, err := hasTable(ctx, q, c.table)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		var v int
		err = q.QueryRowContext(ctx, c.query).Scan(&v)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s schema version from %s: %w", c.name, c.table, err)
		}
		out[c.name] = v
	}
	return out, nil
}

// SupportedSchemas returns, for each component, the schema version this
// program creates and understands (the version its Migrate produces). A
// snapshot whose schemas are at most these can be restored; an older one is
// upgraded by the usual Migrate calls when the node opens it. The map is a
// fresh copy; the error is only an unexpected failure of the in-memory
// database used to find the versions.
func SupportedSchemas() (map[string]int, error) {
	m, err := supported()
	if err != nil {
		return nil, err
	}
	c := make(map[string]int, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c, nil
}

// supported runs every component's Migrate on an empty in-memory database
// once and reads the versions back: the migrations themselves are the one
// source of truth for what this program understands.
var supported = sync.OnceValues(func() (map[string]int, error) {
	ctx := context.Background()
	db, err := sql.Open("sqlite", "file::memory:")
	if err != nil {
		return nil, fmt.Errorf("snapshot: find supported schema versions: %w", err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1) // one connection: one in-memory database
	for _, m := range []func(context.Context, *sql.DB) error{applier.Migrate, kv.Migrate, outbox.Migrate} {
		if err := m(ctx, db); err != nil {
			return nil, fmt.Errorf("snapshot: find supported schema versions: %w", err)
		}
	}
	v, err := readSchemas(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("snapshot: find supported schema versions: %w", err)
	}
	return v, nil
})
