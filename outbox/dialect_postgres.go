package outbox

import "time"

// The two-key PostgreSQL advisory locks of this package have first keys
// 1668247156 (0x636f6e74, "cont": the append lock of the insert trigger) and
// 1668247157 (the drainer lock); the second key is the oid of the
// controlfeed_outbox table, so outboxes in different schemas of one database
// do not contend. An application must not use advisory locks with these
// first keys.

// pgNotifyChannel is the channel the outbox's insert trigger notifies, once
// per committing transaction that appended, with the table's schema as the
// payload.
const pgNotifyChannel = "controlfeed_outbox"

// postgres is the PostgreSQL dialect (pgx's database/sql driver). Times are
// timestamptz; ids come from a sequence, but are drawn by a BEFORE INSERT
// trigger that first takes the transaction-scoped advisory lock
// (pgLockClass, oid of controlfeed_outbox): between its Append and its
// commit a transaction holds the lock, so appending transactions commit one
// at a time and in id order, as on SQLite. See the package doc, "Order on
// PostgreSQL".
var postgres = dialect{
	name: "postgres",

	lockMigration: `SELECT pg_advisory_xact_lock(1668247156, 0)`,
	createSchemaTable: `CREATE TABLE IF NOT EXISTS controlfeed_schema (
	component TEXT PRIMARY KEY,
	version   INTEGER NOT NULL
)`,
	claimSchemaRow:      `INSERT INTO controlfeed_schema (component, version) VALUES ($1, 0) ON CONFLICT (component) DO UPDATE SET version = controlfeed_schema.version`,
	selectSchemaVersion: `SELECT version FROM controlfeed_schema WHERE component = $1`,
	updateSchemaVersion: `UPDATE controlfeed_schema SET version = $1 WHERE component = $2`,
	migrations: [][]string{
		// 1: the outbox table, its id sequence and insert trigger, and its
		// pending-set index.
		{
			`CREATE TABLE IF NOT EXISTS controlfeed_outbox (
	id                        BIGINT      PRIMARY KEY,
	event_id                  TEXT        NOT NULL UNIQUE,
	type                      TEXT        NOT NULL,
	"key"                     TEXT        NOT NULL DEFAULT '',
	artifact_ref              TEXT        NOT NULL DEFAULT '',
	checksum                  TEXT        NOT NULL DEFAULT '',
	payload_json              TEXT        NOT NULL,
	created_at                TIMESTAMPTZ NOT NULL,
	attempt_count             INTEGER     NOT NULL DEFAULT 0,
	last_error                TEXT        NOT NULL DEFAULT '',
	last_attempt_at           TIMESTAMPTZ,
	published_control_version BIGINT,
	published_at              TIMESTAMPTZ,
	dead_reason               TEXT,
	dead_at                   TIMESTAMPTZ
)`,
			`CREATE SEQUENCE IF NOT EXISTS controlfeed_outbox_id_seq AS BIGINT NO CYCLE OWNED BY controlfeed_outbox.id`,
			// The id is drawn after the lock, not as a column default
			// (defaults are evaluated before BEFORE triggers run), so
			// that id order is lock order is commit order.
			`CREATE OR REPLACE FUNCTION controlfeed_outbox_before_insert() RETURNS trigger
	LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_advisory_xact_lock(1668247156, TG_RELID::int4);
	NEW.id := nextval(format('%I.%I', TG_TABLE_SCHEMA, 'controlfeed_outbox_id_seq'));
	PERFORM pg_notify('controlfeed_outbox', TG_TABLE_SCHEMA);
	RETURN NEW;
END
$$`,
			`CREATE OR REPLACE TRIGGER controlfeed_outbox_before_insert
	BEFORE INSERT ON controlfeed_outbox
	FOR EACH ROW EXECUTE FUNCTION controlfeed_outbox_before_insert()`,
			`CREATE INDEX IF NOT EXISTS controlfeed_outbox_pending
	ON controlfeed_outbox (id) WHERE ` + pendingWhere,
			`CREATE INDEX IF NOT EXISTS controlfeed_outbox_dead
	ON controlfeed_outbox (id) WHERE dead_at IS NOT NULL`,
		},
		// 2: the trust chain head of the feed the pump signs.
		{
			`CREATE TABLE IF NOT EXISTS controlfeed_outbox_chain (
	id         INTEGER     PRIMARY KEY CHECK (id = 1),
	seq        BIGINT      NOT NULL,
	digest     TEXT        NOT NULL,
	key_id     TEXT        NOT NULL,
	updated_at TIMESTAMPTZ NOT NULL
)`,
		},
	},

	selectPending: `SELECT id, event_id, payload_json FROM controlfeed_outbox
	WHERE ` + pendingWhere + ` AND id > $1 ORDER BY id LIMIT $2`,
	markPublished: `UPDATE controlfeed_outbox
	SET published_control_version = $1, published_at = $2, last_attempt_at = $3, attempt_count = attempt_count + 1
	WHERE id = $4 AND ` + pendingWhere,
	markPublishedBatch: `UPDATE controlfeed_outbox
	SET published_control_version = j.cv, published_at = $1, last_attempt_at = $1, attempt_count = attempt_count + 1
	FROM (SELECT (value ->> 0)::bigint AS rid, (value ->> 1)::bigint AS cv FROM jsonb_array_elements($2::jsonb)) AS j
	WHERE controlfeed_outbox.id = j.rid AND ` + pendingWhere,
	markPublishedRange: `UPDATE controlfeed_outbox
	SET published_control_version = id + $2::bigint, published_at = $1, last_attempt_at = $1, attempt_count = attempt_count + 1
	WHERE id BETWEEN $3 AND $4 AND ` + pendingWhere,
	markFailed: `UPDATE controlfeed_outbox
	SET last_error = $1, last_attempt_at = $2, attempt_count = attempt_count + 1
	WHERE id = $3 AND ` + pendingWhere,
	markDead: `UPDATE controlfeed_outbox SET dead_reason = $1, dead_at = $2
	WHERE id = $3 AND ` + pendingWhere,
	markDeadByEventID: `UPDATE controlfeed_outbox SET dead_reason = $1, dead_at = $2
	WHERE event_id = $3 AND ` + pendingWhere,
	counts: `SELECT
	(SELECT COUNT(*) FROM controlfeed_outbox WHERE ` + pendingWhere + `),
	(SELECT COUNT(*) FROM controlfeed_outbox WHERE published_control_version IS NOT NULL),
	(SELECT COUNT(*) FROM controlfeed_outbox WHERE dead_at IS NOT NULL),
	(SELECT MIN(created_at) FROM controlfeed_outbox WHERE ` + pendingWhere + `)`,
	listPending: `SELECT ` + rowColumns + ` FROM controlfeed_outbox
	WHERE ` + pendingWhere + ` ORDER BY id LIMIT $1`,
	listDead: `SELECT ` + rowColumns + ` FROM controlfeed_outbox
	WHERE dead_at IS NOT NULL ORDER BY id LIMIT $1`,
	prune: `DELETE FROM controlfeed_outbox
	WHERE published_control_version IS NOT NULL AND published_at < $1`,

	listen:      true,
	drainerLock: `SELECT pg_try_advisory_lock(1668247157, 'controlfeed_outbox'::regclass::oid::int4)`,

	selectChain: `SELECT seq, digest FROM controlfeed_outbox_chain WHERE id = 1`,
	upsertChain: `INSERT INTO controlfeed_outbox_chain (id, seq, digest, key_id, updated_at) VALUES (1, $1, $2, $3, $4)
	ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, digest = excluded.digest, key_id = excluded.key_id, updated_at = excluded.updated_at`,

	storeTableExists: `SELECT CASE WHEN to_regclass('controlfeed_outbox_artifact_store') IS NULL THEN 0 ELSE 1 END`,
	lockStoreTable:   `SELECT pg_advisory_xact_lock(1668247156, 0)`,
	createStoreTable: createStoreTable,
	selectStore:      `SELECT backend, location, recorded_at FROM controlfeed_outbox_artifact_store WHERE id = 1`,
	insertStore: `INSERT INTO controlfeed_outbox_artifact_store (id, backend, location, recorded_at) VALUES (1, $1, $2, $3)
	ON CONFLICT (id) DO NOTHING`,

	timeValue: func(t time.Time) any { return t.UTC() },
}
