package outbox

import (
	"database/sql"
	"reflect"
	"strings"
	"time"
)

// appendInsert is Append's statement, the same text on every dialect: a
// *sql.Tx does not tell which driver it belongs to, so Append cannot choose.
// SQLite and PostgreSQL both read $N as the N-th argument, and both accept
// the created_at text (sqliteTimeLayout) for their column type; what differs
// (PostgreSQL's id assignment under a lock, its NOTIFY) lives in the schema,
// as a trigger. Args: event_id, type, key, artifact_ref, checksum,
// payload_json, created_at. Affects 0 rows when event_id exists.
const appendInsert = `INSERT INTO controlfeed_outbox
	(event_id, type, "key", artifact_ref, checksum, payload_json, created_at)
	VALUES ($1, $2, $3, $4, $5, $6, $7)
	ON CONFLICT (event_id) DO NOTHING`

// appendTime encodes Append's created_at argument for appendInsert.
func appendTime(t time.Time) string { return t.UTC().Format(sqliteTimeLayout) }

// pgxDriverPkg is the package path prefix of the PostgreSQL driver this
// package recognizes (github.com/jackc/pgx/v5/stdlib).
const pgxDriverPkg = "github.com/jackc/pgx/"

// dialectOf returns the dialect of db: postgres for a pool opened through
// pgx's database/sql driver (github.com/jackc/pgx/v5/stdlib, sql.Open("pgx",
// url) or stdlib.OpenDB), sqlite for anything else.
func dialectOf(db *sql.DB) *dialect {
	t := reflect.TypeOf(db.Driver())
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && strings.HasPrefix(t.PkgPath(), pgxDriverPkg) {
		return &postgres
	}
	return &sqlite
}
