package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// IsPostgres reports whether db was opened through pgx's database/sql driver
// (github.com/jackc/pgx/v5/stdlib), and so gets this package's PostgreSQL
// dialect; anything else gets the SQLite one. Other packages that keep
// producer tables beside the outbox (kv) choose their SQL with it.
func IsPostgres(db *sql.DB) bool { return db != nil && dialectOf(db) == &postgres }

// Drainer describes the session holding an outbox's drainer lock on
// PostgreSQL, as the server's pg_stat_activity shows it.
type Drainer struct {
	// PID is the server process id of the lock's session: the argument
	// of pg_terminate_backend to end it.
	PID int64
	// ApplicationName is the session's application_name: controlfeed
	// serve sets it to name the process (node name and pid) unless the
	// URL sets it.
	ApplicationName string
	// ClientAddr is the holder's address; empty for a Unix socket.
	ClientAddr string
	// Since is when the lock's session started (the lock is taken on a
	// fresh session, so about when this holder took over).
	Since time.Time
}

// drainerHolder finds the session holding the drainer lock of the outbox
// on the search path (the same keys as the dialect's drainerLock).
const drainerHolder = `SELECT a.pid, COALESCE(a.application_name, ''), COALESCE(host(a.client_addr), ''), a.backend_start
	FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
	WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
	AND l.classid = 1668247157 AND l.objid = 'controlfeed_outbox'::regclass::oid AND l.objsubid = 2
	LIMIT 1`

// ReadDrainer returns the session holding the drainer lock of db's outbox
// (PostgreSQL), or nil if no pump holds it: none runs, or a takeover is
// under way. It only reads, from any process. On SQLite, which has no
// drainer lock (the daemon uses a lock file), it returns nil, nil. Seeing
// another user's session needs the pg_read_all_stats role or the same
// user; otherwise PID is shown but the other fields are empty.
func ReadDrainer(ctx context.Context, db *sql.DB) (*Drainer, error) {
	if !IsPostgres(db) {
		return nil, nil
	}
	var (
		d     Drainer
		since sql.NullTime
	)
	err := db.QueryRowContext(ctx, drainerHolder).Scan(&d.PID, &d.ApplicationName, &d.ClientAddr, &since)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("outbox: read drainer lock holder: %w", err)
	}
	d.Since = since.Time
	return &d, nil
}
