package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"time"

	"github.com/controlfeed/controlfeed/internal/node"
)

// postgresCommands are the commands that take a PostgreSQL URL as --db: a
// producer's. The others work on a node's database, which is SQLite.
var postgresCommands = map[string]bool{
	"serve": true, "kv put": true, "kv get": true, "kv list": true, "kv delete": true, "status": true,
}

// postgresHelp is the paragraph of the help of the commands in
// postgresCommands.
const postgresHelp = `

--db may also be a PostgreSQL URL, postgres://USER@HOST:PORT/DBNAME?sslmode=...,
for a producer whose outbox and kv table live in PostgreSQL (nodes stay
SQLite). The password comes from the URL, PGPASSWORD or ~/.pgpass (pgx reads
the standard PG* variables); it is never logged or printed. Prefer
CONTROLFEED_DB or PGPASSWORD to a password on the command line, where ps
shows it.`

// checkPostgresDB refuses a PostgreSQL --db for a command that needs a
// SQLite file, and checks what serve needs on PostgreSQL.
func (s *settings) checkPostgresDB(cmd *command) error {
	if !node.IsPostgresURL(s.DB) {
		return nil
	}
	if !postgresCommands[cmd.name] {
		return usageErrorf("controlfeed %s: --db %s is a PostgreSQL URL, but this command works on a node's SQLite database file: "+
			"on PostgreSQL only a producer runs (serve --feed-sink, kv put/get/list/delete, status); give --db the node's database file",
			cmd.name, node.RedactDB(s.DB))
	}
	if cmd == serveCmd && s.FeedSource != "" && s.FeedSource != "nop" {
		return usageErrorf("controlfeed serve: --feed-source %s with the PostgreSQL database %s: a node's database must be a SQLite file "+
			"(its cursor and applied events live there); PostgreSQL holds producers only: run the node with --db /path/node.db, "+
			"and the producer (--feed-sink) on PostgreSQL", s.FeedSource, node.RedactDB(s.DB))
	}
	if cmd == kvPutCmd && (s.ArtifactStore == "" || s.ArtifactStore == "file") && s.ArtifactDir == "" {
		return usageErrorf("controlfeed kv put: the file artifact store has no default directory with the PostgreSQL database %s "+
			"(the default is next to a SQLite --db file): give --artifact-dir, the directory the nodes read artifacts from, "+
			"or --artifact-store jetstream", node.RedactDB(s.DB))
	}
	return nil
}

// openProducerDB opens --db for kv put and kv delete: the SQLite file
// (created and migrated), or the PostgreSQL database (migrated).
func (s *settings) openProducerDB(ctx context.Context) (*sql.DB, error) {
	if node.IsPostgresURL(s.DB) {
		return node.OpenPostgres(ctx, s.DB, "kv")
	}
	return node.OpenDB(ctx, s.DB)
}

// printPostgresStatus is status's text on a PostgreSQL producer database.
func printPostgresStatus(w io.Writer, st node.Status) {
	fmt.Fprintf(w, "database:        PostgreSQL producer (outbox and kv; no applier)\n")
	fmt.Fprintf(w, "outbox pending:  %d\n", st.OutboxPending)
	if st.OutboxOldestPending != nil {
		fmt.Fprintf(w, "oldest pending:  %s\n", st.OutboxOldestPending.Format(time.RFC3339))
	}
	fmt.Fprintf(w, "outbox dead:     %d\n", st.OutboxDead)
	if h := st.PumpHolder; h != nil {
		fmt.Fprintf(w, "pump:            %q publishes (server pid %d, since %s)", h.ApplicationName, h.BackendPID, h.Since.Format(time.RFC3339))
		if h.ClientAddr != "" {
			fmt.Fprintf(w, " from %s", h.ClientAddr)
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "                 other serve processes on this database stand by and take over when it stops\n")
	} else {
		fmt.Fprintf(w, "pump:            none holds the drainer lock (no serve --feed-sink runs on this database, or a takeover is under way)\n")
	}
}
