// Package kv is controlfeed's built-in replicated key/value table: a producer
// writes keys with Put and Delete, and every fleet node that runs an applier
// with Handlers ends up with the same table, controlfeed_kv.
//
// # Delivery semantics
//
// Put stores the value in the artifact store first, then, in one
// transaction, updates the producer's own row and appends a kv.put event to
// the outbox (package outbox): the event exists if and only if the row
// changed. Delete does the same with a kv.delete event and no artifact. The
// outbox pump publishes the events in order; each node's applier runs the
// handlers inside its apply transaction, so a node's table, cursor and
// applied_events always agree. Nodes converge to the producer's state, which
// Digest summarises: equal digests mean identical tables.
//
// Versions count a key's changes since it was last created: every Put
// increments it (even with an unchanged value), Delete removes the row, and a
// Put after a Delete starts again at 1. The event carries the new Version and
// the prior BaseVersion; nodes store Version as given.
//
// # Crash safety
//
// A crash after the artifact is stored but before the transaction commits
// leaves an unreferenced artifact and no change: the caller retries Put. A
// crash after commit leaves the row and the event together; the pump
// publishes the event later.
//
// # Limits
//
// A value travels to the nodes as one artifact, and a node's applier refuses
// (halts at) an artifact larger than its applier.Config.MaxPayloadBytes. So
// Put refuses a value larger than DefaultMaxValueBytes (the applier's
// default), and PutLimit one larger than the limit given, before anything is
// stored or committed; give PutLimit the nodes' limit when they run with
// another one.
//
// # Roles
//
// Put and Delete are the producer's writes. On a database recorded as a
// node's (package dbrole; controlfeed serve records it when it runs an
// applier) they refuse, before storing anything, with an error wrapping
// dbrole.ErrNodeDatabase: a local write there would make the node differ
// from its producer, and its outbox event would never be published. Write on
// the producer's database instead. A database with no recorded role (a
// producer's that no pump has opened yet, a single node's) accepts them.
//
// # Errors
//
// Errors begin with "kv:" and the operation, and name the key. An invalid key
// wraps ErrInvalidKey, a value over the limit ErrValueTooLarge, a write on a
// node's database dbrole.ErrNodeDatabase. Handlers
// return errors (halting the applier) for an event with an invalid key.
package kv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/internal/failpoint"
	"github.com/controlfeed/controlfeed/outbox"
)

// Event types produced by Put and Delete and handled by Handlers.
const (
	TypePut    = "kv.put"
	TypeDelete = "kv.delete"
)

// ErrInvalidKey is wrapped by ValidateKey's errors.
var ErrInvalidKey = errors.New("invalid key")

// ErrValueTooLarge is wrapped by the error of a Put whose value is larger
// than its limit (see PutLimit).
var ErrValueTooLarge = errors.New("value too large")

// DefaultMaxValueBytes is the largest value Put accepts: the largest
// artifact a node's applier fetches by default
// (applier.DefaultMaxPayloadBytes). A larger value would be stored and
// published, then halt every node at its event.
const DefaultMaxValueBytes = applier.DefaultMaxPayloadBytes

// Entry is one row of the table.
type Entry struct {
	Key   string
	Value []byte
	// Version counts the key's changes since it was created (see the
	// package documentation).
	Version int64
	// UpdatedAt is the producer's time of the change that wrote the row.
	UpdatedAt time.Time
}

var migrations = [][]string{
	{
		`CREATE TABLE controlfeed_kv (
			key        TEXT    PRIMARY KEY,
			value      BLOB    NOT NULL,
			version    INTEGER NOT NULL,
			updated_at TEXT    NOT NULL
		)`,
	},
}

// Migrate creates or upgrades the table controlfeed_kv in db. It is
// idempotent and safe to call from several processes at once: each upgrade
// runs in one transaction together with the recorded version, in
// controlfeed_kv_schema. A producer also needs outbox.Migrate, a node
// applier.Migrate.
func Migrate(ctx context.Context, db *sql.DB) (err error) {
	pg := outbox.IsPostgres(db)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("kv: migrate: begin: %w", err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	if pg {
		// Concurrent CREATE TABLE IF NOT EXISTS can fail on PostgreSQL:
		// migrations queue on a transaction-scoped advisory lock.
		if _, err := tx.ExecContext(ctx, pgMigrationLock); err != nil {
			return fmt.Errorf("kv: migrate: lock: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS controlfeed_kv_schema (
		id      INTEGER PRIMARY KEY CHECK (id = 1),
		version INTEGER NOT NULL
	)`); err != nil {
		return fmt.Errorf("kv: migrate: create controlfeed_kv_schema: %w", err)
	}
	var cur int
	err = tx.QueryRowContext(ctx, `SELECT version FROM controlfeed_kv_schema WHERE id = 1`).Scan(&cur)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("kv: migrate: read schema version: %w", err)
	}
	if cur > len(migrations) {
		return fmt.Errorf("kv: migrate: database schema version %d is newer than this program's %d; upgrade the program", cur, len(migrations))
	}
	steps := migrations
	if pg {
		steps = pgMigrations
	}
	for v := cur; v < len(steps); v++ {
		for _, stmt := range steps[v] {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("kv: migrate to schema version %d: %w", v+1, err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO controlfeed_kv_schema (id, version) VALUES (1, $1)
		ON CONFLICT (id) DO UPDATE SET version = excluded.version`, len(migrations)); err != nil {
		return fmt.Errorf("kv: migrate: record schema version: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("kv: migrate: commit: %w", err)
	}
	return nil
}

// SchemaVersion returns the version of the kv schema this package creates
// and understands, the one Migrate records in controlfeed_kv_schema.
func SchemaVersion() int { return len(migrations) }

// ValidateKey reports whether key is acceptable: non-empty, valid UTF-8, no
// control characters (C0 including NUL, DEL, and C1 U+0080..U+009F), at most
// controlevent.MaxKeyLen bytes. The error wraps ErrInvalidKey.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("kv: key is empty: %w", ErrInvalidKey)
	case len(key) > controlevent.MaxKeyLen:
		return fmt.Errorf("kv: key %q... is %d bytes; the limit is %d: %w", key[:32], len(key), controlevent.MaxKeyLen, ErrInvalidKey)
	case !utf8.ValidString(key):
		return fmt.Errorf("kv: key %q is not valid UTF-8: %w", key, ErrInvalidKey)
	}
	for i, r := range key {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("kv: key %q has control character %U at byte %d: %w", key, r, i, ErrInvalidKey)
		}
	}
	return nil
}

// Handlers returns the node-side handlers for TypePut and TypeDelete, to
// put in applier.Config.Handlers (merge them with the application's own).
//
// kv.put writes the payload as the value of ev.Key with version ev.Version
// and updated_at ev.CreatedAt, inserting or replacing the row. kv.delete
// removes ev.Key; a missing key is fine, so it is idempotent. Both reject an
// event whose key fails ValidateKey, which halts the applier.
func Handlers() map[string]applier.Handler {
	return map[string]applier.Handler{
		TypePut:    applyPut,
		TypeDelete: applyDelete,
	}
}

func applyPut(ctx context.Context, tx *sql.Tx, ev controlevent.Event, payload []byte) error {
	if err := ValidateKey(ev.Key); err != nil {
		return fmt.Errorf("kv: apply put %q: %w", ev.EventID, err)
	}
	if payload == nil {
		payload = []byte{}
	}
	at := ev.CreatedAt
	if at.IsZero() {
		at = time.Now()
	}
	// applier.Exec: prepared once per apply transaction, not per event.
	if _, err := applier.Exec(ctx, tx, `INSERT INTO controlfeed_kv (key, value, version, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version, updated_at = excluded.updated_at`,
		ev.Key, payload, ev.Version, formatTime(at)); err != nil {
		return fmt.Errorf("kv: apply put %q: key %q: %w", ev.EventID, ev.Key, err)
	}
	return nil
}

func applyDelete(ctx context.Context, tx *sql.Tx, ev controlevent.Event, _ []byte) error {
	if err := ValidateKey(ev.Key); err != nil {
		return fmt.Errorf("kv: apply delete %q: %w", ev.EventID, err)
	}
	if _, err := applier.Exec(ctx, tx, `DELETE FROM controlfeed_kv WHERE key = ?`, ev.Key); err != nil {
		return fmt.Errorf("kv: apply delete %q: key %q: %w", ev.EventID, ev.Key, err)
	}
	return nil
}

// Put is PutLimit with DefaultMaxValueBytes: the producer side of a write.
func Put(ctx context.Context, db *sql.DB, store artifact.Store, key string, value []byte) (controlevent.Event, error) {
	return PutLimit(ctx, db, store, key, value, DefaultMaxValueBytes)
}

// CheckValueSize returns an error wrapping ErrValueTooLarge, giving both
// sizes, if size is larger than limit (limit <= 0 means
// DefaultMaxValueBytes), and nil otherwise. Callers that read a value from a
// stream use it to refuse one before reading it all (read at most limit+1
// bytes).
func CheckValueSize(size, limit int64) error {
	if limit <= 0 {
		limit = DefaultMaxValueBytes
	}
	if size > limit {
		return fmt.Errorf("value is %d bytes, larger than the %d-byte limit of the nodes' artifacts: %w", size, limit, ErrValueTooLarge)
	}
	return nil
}

// PutLimit is the producer side of a write. It refuses a value larger than
// limit bytes (limit <= 0 means DefaultMaxValueBytes) with an error wrapping
// ErrValueTooLarge before it stores or changes anything: limit must be at
// most the MaxPayloadBytes of every node's applier, which would otherwise
// halt at the event. Then it stores value in store first, then
// in one transaction sets key's row in db to value with version+1 and
// appends the kv.put event (fresh EventID, Key, Version, BaseVersion,
// ArtifactRef, Checksum, CreatedAt) with outbox.Append, so the event exists
// if and only if the row changed. It returns the event as appended
// (ControlVersion 0). db needs Migrate and outbox.Migrate. On error nothing
// changed in db (the artifact may remain; it is harmless). Concurrent Puts of
// one key are serialised by SQLite's write lock, or on PostgreSQL by the
// row's lock (one upsert reads and bumps the version); each gets its own
// version, and their events are appended in version order.
// On a node's database it stores nothing and returns an error wrapping
// dbrole.ErrNodeDatabase (see Roles in the package documentation).
func PutLimit(ctx context.Context, db *sql.DB, store artifact.Store, key string, value []byte, limit int64) (controlevent.Event, error) {
	if err := ValidateKey(key); err != nil {
		return controlevent.Event{}, fmt.Errorf("kv: put: %w", err)
	}
	if err := CheckValueSize(int64(len(value)), limit); err != nil {
		return controlevent.Event{}, fmt.Errorf("kv: put %q: %w", key, err)
	}
	if store == nil {
		return controlevent.Event{}, fmt.Errorf("kv: put %q: nil artifact store", key)
	}
	pg := outbox.IsPostgres(db)
	if err := checkLocalWrite(ctx, pg, db); err != nil {
		return controlevent.Event{}, fmt.Errorf("kv: put %q: %w", key, err)
	}
	ref, err := artifact.PutBytes(ctx, store, value)
	if err != nil {
		return controlevent.Event{}, fmt.Errorf("kv: put %q: store value: %w", key, err)
	}
	now := time.Now().UTC()
	var ev controlevent.Event
	err = inTx(ctx, db, func(tx *sql.Tx) error {
		// Again under the write lock: a serve may have made it a node's
		// database since the check above.
		if err := checkLocalWrite(ctx, pg, tx); err != nil {
			return err
		}
		if value == nil {
			value = []byte{}
		}
		var base int64
		if pg {
			// One statement reads and bumps the version under the row's
			// lock, so concurrent Puts of a key get successive versions
			// and append their events in that order (see the outbox's
			// commit-order contract).
			v, err := pgWriteRow(ctx, tx, key, value, now)
			if err != nil {
				return err
			}
			base = v - 1
		} else {
			v, _, err := currentVersion(ctx, tx, key)
			if err != nil {
				return err
			}
			base = v
		}
		ev = controlevent.Event{
			EventID: controlevent.NewEventID(), Type: TypePut, Key: key,
			Version: base + 1, BaseVersion: base,
			ArtifactRef: ref, Checksum: ref, CreatedAt: now,
		}
		if !pg {
			if _, err := tx.ExecContext(ctx, `INSERT INTO controlfeed_kv (key, value, version, updated_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version, updated_at = excluded.updated_at`,
				key, value, ev.Version, formatTime(now)); err != nil {
				return fmt.Errorf("write row: %w", err)
			}
		}
		if err := outbox.Append(ctx, tx, ev); err != nil {
			return err
		}
		return failpoint.Inject(failpoint.KVAfterArtifactBeforeCommit)
	})
	if err == nil {
		err = failpoint.Inject(failpoint.KVAfterCommit)
	}
	if err != nil {
		return controlevent.Event{}, fmt.Errorf("kv: put %q: %w", key, err)
	}
	return ev, nil
}

// Delete is the producer side of a removal: in one transaction it deletes
// key's row and appends a kv.delete event (Version = old version + 1,
// BaseVersion = old version, no artifact). If the key does not exist it
// changes nothing, appends no event and returns existed == false. On a
// node's database it changes nothing and returns an error wrapping
// dbrole.ErrNodeDatabase, whether or not the key exists.
func Delete(ctx context.Context, db *sql.DB, key string) (ev controlevent.Event, existed bool, err error) {
	if err := ValidateKey(key); err != nil {
		return ev, false, fmt.Errorf("kv: delete: %w", err)
	}
	pg := outbox.IsPostgres(db)
	err = inTx(ctx, db, func(tx *sql.Tx) error {
		if err := checkLocalWrite(ctx, pg, tx); err != nil {
			return err
		}
		var (
			base int64
			ok   bool
			err  error
		)
		if pg {
			base, ok, err = pgDeleteRow(ctx, tx, key)
		} else {
			base, ok, err = currentVersion(ctx, tx, key)
			if err == nil && ok {
				if _, err := tx.ExecContext(ctx, `DELETE FROM controlfeed_kv WHERE key = ?`, key); err != nil {
					return fmt.Errorf("delete row: %w", err)
				}
			}
		}
		if err != nil || !ok {
			return err
		}
		existed = true
		ev = controlevent.Event{
			EventID: controlevent.NewEventID(), Type: TypeDelete, Key: key,
			Version: base + 1, BaseVersion: base, CreatedAt: time.Now().UTC(),
		}
		return outbox.Append(ctx, tx, ev)
	})
	if err == nil {
		err = failpoint.Inject(failpoint.KVAfterCommit)
	}
	if err != nil {
		return controlevent.Event{}, false, fmt.Errorf("kv: delete %q: %w", key, err)
	}
	return ev, existed, nil
}

// Get returns key's entry and whether it exists.
func Get(ctx context.Context, db *sql.DB, key string) (Entry, bool, error) {
	var e Entry
	var at string
	err := db.QueryRowContext(ctx, `SELECT key, value, version, updated_at FROM controlfeed_kv WHERE key = $1`, key).
		Scan(&e.Key, &e.Value, &e.Version, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return Entry{}, false, nil
	}
	if err != nil {
		return Entry{}, false, fmt.Errorf("kv: get %q: %w", key, err)
	}
	if e.Value == nil {
		e.Value = []byte{}
	}
	e.UpdatedAt = parseTime(at)
	return e, true, nil
}

// List returns every entry, sorted by key (byte order).
func List(ctx context.Context, db *sql.DB) ([]Entry, error) {
	q := `SELECT key, value, version, updated_at FROM controlfeed_kv ORDER BY key`
	if outbox.IsPostgres(db) {
		q = pgListQuery
	}
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("kv: list: %w", err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var e Entry
		var at string
		if err := rows.Scan(&e.Key, &e.Value, &e.Version, &at); err != nil {
			return nil, fmt.Errorf("kv: list: %w", err)
		}
		if e.Value == nil {
			e.Value = []byte{}
		}
		e.UpdatedAt = parseTime(at)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("kv: list: %w", err)
	}
	return out, nil
}

// Digest returns "sha256:<hex>" over the table's (key, version, value)
// triples in key order, each field length-prefixed. Two databases with equal
// digests hold identical tables (UpdatedAt is not included). It reads the
// table in one pass without holding it in memory.
func Digest(ctx context.Context, db *sql.DB) (string, error) {
	if outbox.IsPostgres(db) {
		return digestQuery(ctx, db, pgDigestQuery)
	}
	return digest(ctx, db)
}

// TableDigest is Digest read inside tx: the application digest the
// applier's state digest is paired with (it is an applier.AppDigestFunc),
// so a node's report shows both what it applied and what its table holds,
// and a local edit of the table shows as a different digest.
func TableDigest(ctx context.Context, tx *sql.Tx) (string, error) {
	return digest(ctx, tx)
}

// digest is Digest through q (*sql.DB or *sql.Tx).
func digest(ctx context.Context, q querier) (string, error) {
	return digestQuery(ctx, q, `SELECT key, value, version FROM controlfeed_kv ORDER BY key`)
}

// querier is *sql.DB or *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// digestQuery is digest with the dialect's query: (key, value, version) in
// byte order of key.
func digestQuery(ctx context.Context, q querier, query string) (string, error) {
	rows, err := q.QueryContext(ctx, query)
	if err != nil {
		return "", fmt.Errorf("kv: digest: %w", err)
	}
	defer rows.Close()
	h := sha256.New()
	var buf bytes.Buffer
	for rows.Next() {
		var key string
		var value []byte
		var version int64
		if err := rows.Scan(&key, &value, &version); err != nil {
			return "", fmt.Errorf("kv: digest: %w", err)
		}
		buf.Reset()
		buf.Write(binary.BigEndian.AppendUint64(nil, uint64(len(key))))
		buf.WriteString(key)
		buf.Write(binary.BigEndian.AppendUint64(nil, uint64(version)))
		buf.Write(binary.BigEndian.AppendUint64(nil, uint64(len(value))))
		h.Write(buf.Bytes())
		h.Write(value)
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("kv: digest: %w", err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

func currentVersion(ctx context.Context, tx *sql.Tx, key string) (int64, bool, error) {
	var v int64
	err := tx.QueryRowContext(ctx, `SELECT version FROM controlfeed_kv WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read version: %w", err)
	}
	return v, true, nil
}

func inTx(ctx context.Context, db *sql.DB, f func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := f(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

const timeFormat = time.RFC3339Nano

func formatTime(t time.Time) string { return t.UTC().Format(timeFormat) }

func parseTime(s string) time.Time {
	t, _ := time.Parse(timeFormat, s)
	return t
}
