// Package outbox is the producer side of controlfeed: a transactional outbox
// table next to the producer's own state, Append to record an event inside the
// producer's transaction, and a Pump that drains the table into a feed.Sink in
// order.
//
// A producer stores the event's payload in the artifact store first, then, in
// one SQL transaction, makes its own change and calls Append. The event exists
// if and only if that transaction commits. A Pump (one per database) reads the
// pending rows in outbox order, publishes them through the Sink, which stamps
// each with its ControlVersion, and writes the ControlVersion back to the row.
//
// # Schema
//
// Migrate creates the table controlfeed_outbox and records its version in
// controlfeed_schema (component "outbox"). Rows are numbered by an id that only
// grows and is never reused, even after rows are deleted; that id is the
// outbox order. A row is pending while published_control_version is NULL and
// dead_at is NULL, published once published_control_version is set, and dead
// once dead_at is set. All SQL of this package lives in one file per dialect
// (dialect_sqlite.go, dialect_postgres.go); the functions that take a *sql.DB
// choose it from the pool's driver: PostgreSQL for pgx's database/sql driver
// (github.com/jackc/pgx/v5/stdlib, sql.Open("pgx", url)), SQLite otherwise.
// Append's single statement is valid on both, since a *sql.Tx does not say
// which driver it belongs to. On PostgreSQL the tables live in the first
// schema of the connections' search_path.
//
// # Order on PostgreSQL
//
// The feed's order of a resource (an event Key) is the commit order of the
// transactions that changed it. The producer's contract:
//
//   - call Append in the transaction that makes the change the event
//     describes, never in a separate one;
//   - call Append last, after all of the transaction's changes and just
//     before Commit.
//
// Why it holds. On SQLite a single writer commits transactions one at a
// time, and the ids they draw ascend in commit order. PostgreSQL draws
// sequence values at insert time, in any order relative to commit, so the
// outbox's insert trigger (controlfeed_outbox_before_insert) first takes
// the transaction-scoped advisory lock (1668247156, oid of
// controlfeed_outbox) and only then draws the row's id. A transaction holds
// that lock from its first Append to its commit or rollback, so appending
// transactions commit one at a time and in id order, exactly as on SQLite:
// whenever a row is visible, every row with a smaller id is visible too or
// was rolled back. The pump can then read pending rows by id, and read ahead
// by "id after the last row read", without ever skipping a row that commits
// late (no row with a smaller id can commit later) or publishing a later
// change of a key before an earlier one. This holds whatever locks the
// producer takes on its own rows, even for an Append placed before the
// change it describes.
//
// What it costs: appending transactions serialize from their first Append
// to their commit, so Append should be the last statement. A transaction
// that appends and then waits for a row lock held by another transaction
// that is waiting to append deadlocks; PostgreSQL detects it after
// deadlock_timeout (1s by default) and aborts one of them, which the
// producer retries. Calling Append last avoids it. Transactions that do not
// append are not affected. The lock's first key, 1668247156, must not be
// used by the application's own advisory locks.
//
// Why not the xid8 approach (record pg_current_xact_id() on each row and
// publish only rows of transactions below pg_snapshot_xmin of the pump's
// snapshot, in (xid, id) order, as Watermill's SQL forwarder does after it
// skipped rows whose commits landed out of order): it lets producers append
// concurrently, but a transaction id is assigned at the transaction's first
// write, not at commit, so two transactions changing the same key can
// commit in the reverse order of their ids (the later one wrote something
// else first), and the feed would carry the key's changes reversed unless
// every producer kept to "Append right after locking the key's row"; and
// the pump would stall behind every long-running transaction of the whole
// database, appending or not, since any of them holds back the snapshot's
// xmin. The lock gives commit order by construction at the price of
// serializing the (short) tail of appending transactions, which is what
// SQLite does for every write anyway. TestPump_FeedOrderIsCommitOrder checks
// it: many concurrent transactions on overlapping keys, both producer styles,
// late commits and rollbacks; it fails when the lock is removed.
//
// # The pump's artifact store
//
// Every event a producer appends names its payload by an artifact
// reference, and every node fetches that reference from the store it is
// configured with: the producer's pump's store. A write that stores its
// payload in another store (another backend, bucket or directory than the
// pump's) commits an event that every node halts at, "artifact not found". So a producer records, once, which store its pump publishes
// references into (RecordArtifactStore, which controlfeed serve calls when
// it runs a pump), and every writer that stores an artifact and then
// appends checks its own store against the record first
// (CheckArtifactStore), before anything is stored.
//
// The record is the one row of the table controlfeed_outbox_artifact_store,
// created by the first RecordArtifactStore (not by Migrate, so databases of
// every schema version get it when a pump first starts on them, and
// commands that only read never see a change). It is never changed by this
// package: to move a producer to another store on purpose, first make sure
// every node can read the events already in the feed and in the outbox
// (copy their artifacts into the new store), then, while no controlfeed
// process uses the database, delete the row,
// "DELETE FROM controlfeed_outbox_artifact_store" (sqlite3 or psql); the
// next pump to start records its own store.
//
// # Delivery semantics
//
// Rows are published strictly in id order. A failed publish stops the pass at
// that row: no later row is handed to the Sink until the failed one has been
// published, so the feed's order is the commit order of the outbox ids. Each
// event is published with the EventID it was appended with, which the Sink
// uses as its idempotent-publish key, so publishing a row again (after a crash
// or a lost write-back) resolves to the same ControlVersion within the Sink's
// dedup window. Past that window a duplicate may reach the feed; the
// consumers' applied_events table makes applying it a no-op. The effect is
// exactly once; the delivery is at least once.
//
// The pump checks every stamp it gets back: a ControlVersion of 0, an EventID
// other than the one sent, or a ControlVersion not greater than the previous
// row's in the same pass is an error (wrapping ErrSinkContract), handled like
// a failed publish: the row stays pending and the pass stops.
//
// A row that can never be published (its payload_json does not decode, names
// another event_id than its column, or fails
// controlevent.Event.ValidateUnpublished) is marked dead with the reason,
// logged at ERROR and counted in Stats.Dead; it does not block the rows after
// it. Dead rows stay in the table for an operator (ListDead).
//
// # Crash safety
//
// Append writes only inside the caller's transaction, so a crash before commit
// leaves no row and a crash after commit leaves a pending row that the next
// pump publishes. A crash of the pump after the Sink accepted an event but
// before the write-back committed leaves the row pending; the next pass
// publishes it again with the same EventID and the Sink's dedup returns the
// original ControlVersion. Write-back of a chunk of rows is one transaction, so
// it is recorded entirely or not at all.
//
// A power loss is covered too: nothing is published before the transaction
// that created it is on disk. On PostgreSQL a commit returns once its WAL is
// flushed (synchronous_commit on, the default), so a row the pump can read
// is durable; producers that turn synchronous_commit off for their
// transactions give that up (a published event may vanish from the
// producer with a crash of the server). SQLite databases opened by package sqlitedb
// commit without an fsync (WAL, synchronous=NORMAL), so each pass fsyncs the
// database's WAL file after reading a chunk of pending rows and before
// publishing the first of them; that covers every transaction committed
// before the read, by any process. A failed fsync fails the pass before
// anything is published.
//
// Run stops cleanly: when its context is done it starts no new publish, lets
// the publish in flight and its write-back finish (bounded by
// Config.ShutdownTimeout), and returns nil.
//
// # One drainer on PostgreSQL
//
// Several producer processes may run a pump on one PostgreSQL outbox. Run
// first takes the drainer lock, a session-scoped advisory lock (1668247157,
// oid of controlfeed_outbox), on a connection it keeps for that purpose;
// only the holder publishes. The others stand by (Stats.Standby, logged
// once) and retry every Config.DrainerLockInterval (default 1s). The holder
// confirms its lock session every interval; if a confirmation fails or takes
// longer than an interval, it stops starting publishes (the one in flight
// finishes) and stands by. Stats.Takeovers counts the takes. The failure
// modes:
//
//   - The holder stops cleanly or its process dies (SIGKILL, OOM): its
//     session ends, the server releases the lock at once, and a standby
//     takes it within one interval (with a 100 ms interval: 20 ms after a
//     clean stop in TestPump_OneDrainerTakeover, 120-300 ms after a
//     SIGKILL of the holder's process in
//     TestPump_DrainerTakeoverAfterSIGKILL; with the default 1s, expect up
//     to about a second).
//   - Its lock session is terminated (pg_terminate_backend, a server
//     restart, a failover): the lock is released at once; the holder learns
//     it at its next confirmation (at most one interval later), stops, and
//     tries the lock again only two intervals later, leaving it to a
//     standby.
//     Meanwhile a standby may already publish: both publish the same rows,
//     in the same order, with the same EventIDs, and the Sink's dedup
//     resolves the overlap to one copy (measured: takeover in 130 ms with a
//     100 ms interval).
//   - The network between holder and server is cut: the holder stops after
//     at most two intervals without a confirmation; the server ends the
//     silent session after five intervals (idle_session_timeout, at least
//     2s; PostgreSQL 14 or newer, older servers only notice through TCP
//     keepalives), and a standby takes over then.
//   - The holder is frozen (SIGSTOP, a long GC pause) past five intervals:
//     the server ends its session and a standby takes over; when the holder
//     resumes, the confirmation in flight fails and it stops. A publish it
//     had started before the freeze may still reach the Sink after the new
//     holder's; it republishes a row the new holder published or will
//     publish, with the same EventID, so dedup absorbs it within its window.
//
// Feed order across a takeover rests on every pump publishing pending rows
// in id order and on the Sink's EventID dedup: the overlap is always a
// repeat of rows in order, never a reordering. Pass does not take the lock.
//
// Behind a connection pooler the lock needs a session: a direct connection
// or PgBouncer in session mode. Transaction pooling hands the lock's server
// connection to other clients, so the holder could not tell when it lost it,
// and LISTEN does not work either: there set Config.NoDrainerLock and
// Config.NoListen, and run exactly one pump yourself.
//
// # Errors
//
// Errors begin with "outbox:" and the operation, name the event or row, and
// wrap the underlying error with %w. Append wraps ErrDuplicate for an EventID
// already in the outbox and controlevent.ErrInvalid for an event that fails
// validation. Publish errors wrap the Sink's error, or ErrSinkContract when
// the Sink's answer is malformed. The Pump retries failed passes itself with
// capped exponential backoff and jitter; Sinks must not retry.
//
// # Operations
//
// Run exactly one Pump per database on SQLite (the daemon's pump lock file
// enforces it): two pumps on the same outbox keep the feed's order only
// through the Sink's dedup. On PostgreSQL any number may run; Run makes
// exactly one of them publish (see "One drainer on PostgreSQL"). Stats reports what the pump did
// and whether it is backing off; ReadCounts, ListPending and ListDead read the
// table from any process. A pending row that keeps failing shows its
// attempt_count, last_error and last_attempt_at in ListPending; a row that must
// be abandoned can be marked dead with MarkDead, after which the rows behind
// it proceed. Published rows are kept until Prune deletes them.
package outbox
