package outbox

import "time"

// dialect holds every SQL statement of this package that differs between
// databases; one value per database (sqlite here, postgres in
// dialect_postgres.go), chosen by dialectOf. Statements take their arguments
// in the order given in the comments. Append's insert is shared (appendInsert),
// since a *sql.Tx does not say which driver it belongs to.
type dialect struct {
	name string

	// lockMigration, if not "", is the first statement of the migration
	// transaction, and createSchemaTable then runs inside it, after the
	// lock (PostgreSQL: concurrent CREATE TABLE IF NOT EXISTS can fail
	// on the catalog's unique index). If "", createSchemaTable runs
	// before the transaction.
	lockMigration string
	// createSchemaTable creates controlfeed_schema if it is missing;
	// idempotent.
	createSchemaTable string
	// claimSchemaRow is the first statement of the migration transaction:
	// a write that takes the database's write lock (so concurrent Migrates
	// queue) and makes sure the component's row exists. Args: component.
	claimSchemaRow string
	// selectSchemaVersion args: component.
	selectSchemaVersion string
	// updateSchemaVersion args: version, component.
	updateSchemaVersion string
	// migrations[i] upgrades the schema from version i to i+1.
	migrations [][]string

	// selectPending args: after (an id; 0 for all), limit. Pending rows
	// with a greater id, in id order. Columns: id, event_id, payload_json.
	selectPending string
	// markPublished args: control_version, published_at, last_attempt_at
	// (the same time), id. Only pending rows.
	markPublished string
	// markPublishedBatch records a whole published chunk in one statement.
	// Args: published_at = last_attempt_at, then a JSON array of
	// [id, control_version] pairs. Only pending rows.
	markPublishedBatch string
	// markPublishedRange records a run of rows whose ids and
	// control_versions both ascend by one: control_version = id + delta.
	// Args: published_at = last_attempt_at, delta, first id, last id. Only
	// pending rows. Cheaper per row than markPublishedBatch (no JSON, no
	// join), and exact because every id from first to last is in the run.
	markPublishedRange string
	// markFailed args: last_error, last_attempt_at, id.
	markFailed string
	// markDead args: dead_reason, dead_at, id. Only pending rows.
	markDead string
	// markDeadByEventID args: dead_reason, dead_at, event_id. Only pending rows.
	markDeadByEventID string
	// counts: no args. Columns: pending, published, dead, oldest pending created_at.
	counts string
	// listPending and listDead args: limit. Columns: rowColumns.
	listPending string
	listDead    string
	// prune args: published_at bound (exclusive).
	prune string

	// checkpoint runs a non-blocking WAL checkpoint; "" if the database
	// needs none. Columns: three integers (ignored).
	checkpoint string
	// syncFiles is true when commits are not durable by themselves and
	// the pump must fsync the database's files before publishing (see
	// durability).
	syncFiles bool
	// listen is true when Run can wake on the database's notifications
	// (PostgreSQL's LISTEN; see listenLoop).
	listen bool
	// drainerLock, if not "", tries to take the session-scoped lock that
	// makes a pump the outbox's one drainer; "" where the database has
	// none (SQLite: the daemon's pump lock file does that job). Columns:
	// one boolean, true when taken. Ending the session releases it.
	drainerLock string

	// selectChain reads the trust chain head of the last published signed
	// event (no row: the chain's start). Columns: seq, digest.
	selectChain string
	// upsertChain records it. Args: seq, digest, key id, time.
	upsertChain string

	// storeTableExists tells whether controlfeed_outbox_artifact_store
	// exists (created by RecordArtifactStore, not by Migrate). Columns:
	// one integer, 0 or 1.
	storeTableExists string
	// lockStoreTable, if not "", runs first in RecordArtifactStore's
	// transaction, before createStoreTable (PostgreSQL: concurrent
	// CREATE TABLE IF NOT EXISTS can fail).
	lockStoreTable string
	// createStoreTable creates it if missing; idempotent.
	createStoreTable string
	// selectStore reads the recorded store. Columns: backend, location,
	// recorded_at (text in sqliteTimeLayout).
	selectStore string
	// insertStore records one unless one is recorded. Args: backend,
	// location, recorded_at (text).
	insertStore string

	// timeValue encodes a time for a bind parameter.
	timeValue func(time.Time) any
}

// sqliteTimeLayout is fixed-width, so the stored text sorts in time order
// (MIN(created_at) is the oldest). Times are stored in UTC.
const sqliteTimeLayout = "2006-01-02T15:04:05.000000000Z07:00"

const rowColumns = `id, event_id, type, "key", artifact_ref, checksum, payload_json, created_at,
	attempt_count, last_error, last_attempt_at, published_control_version, published_at,
	dead_reason, dead_at`

const pendingWhere = `published_control_version IS NULL AND dead_at IS NULL`

var sqlite = dialect{
	name: "sqlite",

	createSchemaTable: `CREATE TABLE IF NOT EXISTS controlfeed_schema (
	component TEXT PRIMARY KEY,
	version   INTEGER NOT NULL
)`,
	claimSchemaRow:      `INSERT INTO controlfeed_schema (component, version) VALUES (?, 0) ON CONFLICT (component) DO UPDATE SET version = version`,
	selectSchemaVersion: `SELECT version FROM controlfeed_schema WHERE component = ?`,
	updateSchemaVersion: `UPDATE controlfeed_schema SET version = ? WHERE component = ?`,
	migrations: [][]string{
		// 1: the outbox table and its pending-set index.
		{
			`CREATE TABLE IF NOT EXISTS controlfeed_outbox (
	id                        INTEGER PRIMARY KEY AUTOINCREMENT,
	event_id                  TEXT    NOT NULL UNIQUE,
	type                      TEXT    NOT NULL,
	"key"                     TEXT    NOT NULL DEFAULT '',
	artifact_ref              TEXT    NOT NULL DEFAULT '',
	checksum                  TEXT    NOT NULL DEFAULT '',
	payload_json              TEXT    NOT NULL,
	created_at                TEXT    NOT NULL,
	attempt_count             INTEGER NOT NULL DEFAULT 0,
	last_error                TEXT    NOT NULL DEFAULT '',
	last_attempt_at           TEXT,
	published_control_version INTEGER,
	published_at              TEXT,
	dead_reason               TEXT,
	dead_at                   TEXT
)`,
			`CREATE INDEX IF NOT EXISTS controlfeed_outbox_pending
	ON controlfeed_outbox (id) WHERE ` + pendingWhere,
			`CREATE INDEX IF NOT EXISTS controlfeed_outbox_dead
	ON controlfeed_outbox (id) WHERE dead_at IS NOT NULL`,
		},
		// 2: the trust chain head of the feed the pump signs.
		{
			`CREATE TABLE IF NOT EXISTS controlfeed_outbox_chain (
	id         INTEGER PRIMARY KEY CHECK (id = 1),
	seq        INTEGER NOT NULL,
	digest     TEXT    NOT NULL,
	key_id     TEXT    NOT NULL,
	updated_at TEXT    NOT NULL
)`,
		},
	},

	selectPending: `SELECT id, event_id, payload_json FROM controlfeed_outbox
	WHERE ` + pendingWhere + ` AND id > ? ORDER BY id LIMIT ?`,
	markPublished: `UPDATE controlfeed_outbox
	SET published_control_version = ?, published_at = ?, last_attempt_at = ?, attempt_count = attempt_count + 1
	WHERE id = ? AND ` + pendingWhere,
	markPublishedBatch: `UPDATE controlfeed_outbox
	SET published_control_version = j.cv, published_at = ?1, last_attempt_at = ?1, attempt_count = attempt_count + 1
	FROM (SELECT value ->> 0 AS oid, value ->> 1 AS cv FROM json_each(?2)) AS j
	WHERE controlfeed_outbox.id = j.oid AND ` + pendingWhere,
	markPublishedRange: `UPDATE controlfeed_outbox
	SET published_control_version = id + ?2, published_at = ?1, last_attempt_at = ?1, attempt_count = attempt_count + 1
	WHERE id BETWEEN ?3 AND ?4 AND ` + pendingWhere,
	markFailed: `UPDATE controlfeed_outbox
	SET last_error = ?, last_attempt_at = ?, attempt_count = attempt_count + 1
	WHERE id = ? AND ` + pendingWhere,
	markDead: `UPDATE controlfeed_outbox SET dead_reason = ?, dead_at = ?
	WHERE id = ? AND ` + pendingWhere,
	markDeadByEventID: `UPDATE controlfeed_outbox SET dead_reason = ?, dead_at = ?
	WHERE event_id = ? AND ` + pendingWhere,
	counts: `SELECT
	(SELECT COUNT(*) FROM controlfeed_outbox WHERE ` + pendingWhere + `),
	(SELECT COUNT(*) FROM controlfeed_outbox WHERE published_control_version IS NOT NULL),
	(SELECT COUNT(*) FROM controlfeed_outbox WHERE dead_at IS NOT NULL),
	(SELECT MIN(created_at) FROM controlfeed_outbox WHERE ` + pendingWhere + `)`,
	listPending: `SELECT ` + rowColumns + ` FROM controlfeed_outbox
	WHERE ` + pendingWhere + ` ORDER BY id LIMIT ?`,
	listDead: `SELECT ` + rowColumns + ` FROM controlfeed_outbox
	WHERE dead_at IS NOT NULL ORDER BY id LIMIT ?`,
	prune: `DELETE FROM controlfeed_outbox
	WHERE published_control_version IS NOT NULL AND published_at < ?`,

	checkpoint: `PRAGMA wal_checkpoint(PASSIVE)`,
	syncFiles:  true,

	selectChain: `SELECT seq, digest FROM controlfeed_outbox_chain WHERE id = 1`,
	upsertChain: `INSERT INTO controlfeed_outbox_chain (id, seq, digest, key_id, updated_at) VALUES (1, ?, ?, ?, ?)
	ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, digest = excluded.digest, key_id = excluded.key_id, updated_at = excluded.updated_at`,

	storeTableExists: `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'controlfeed_outbox_artifact_store'`,
	createStoreTable: createStoreTable,
	selectStore:      `SELECT backend, location, recorded_at FROM controlfeed_outbox_artifact_store WHERE id = 1`,
	insertStore: `INSERT INTO controlfeed_outbox_artifact_store (id, backend, location, recorded_at) VALUES (1, ?, ?, ?)
	ON CONFLICT (id) DO NOTHING`,

	timeValue: func(t time.Time) any { return t.UTC().Format(sqliteTimeLayout) },
}

// createStoreTable is the same on both dialects: recorded_at is text in
// sqliteTimeLayout, so the record reads back alike everywhere.
const createStoreTable = `CREATE TABLE IF NOT EXISTS controlfeed_outbox_artifact_store (
	id          INTEGER PRIMARY KEY CHECK (id = 1),
	backend     TEXT    NOT NULL,
	location    TEXT    NOT NULL,
	recorded_at TEXT    NOT NULL
)`
