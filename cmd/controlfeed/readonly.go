package main

import (
	"context"
	"database/sql"

	"github.com/controlfeed/controlfeed/internal/node"
)

// readOnlyDB is the help of --db for the commands that only read it.
var readOnlyDB = map[string]flagHelp{
	"db": {usage: "SQLite database `FILE` of a node or producer, or a producer's PostgreSQL URL; must exist, and is only read (never created, migrated or changed)"},
}

// openReadOnlyArgs is parseDBArgs followed by opening --db read-only with
// node.OpenDBReadOnly, for commands that must not change the file: not
// create it, migrate it or switch its journal mode. The caller closes the
// database; an error is to be returned through helpOK.
func (m *Main) openReadOnlyArgs(ctx context.Context, cmd *command, s *settings, args []string, minArgs, maxArgs int) (*sql.DB, []string, error) {
	pos, err := m.parseDBArgs(cmd, s, args, minArgs, maxArgs)
	if err != nil {
		return nil, nil, err
	}
	open := node.OpenDBReadOnly
	if node.IsPostgresURL(s.DB) {
		open = node.OpenPostgresReadOnly
	}
	db, err := open(ctx, s.DB)
	if err != nil {
		return nil, nil, err
	}
	return db, pos, nil
}
