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
// (SQLite today) so other databases can follow.
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
// that created it is on disk. SQLite databases opened by package sqlitedb
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
// Run exactly one Pump per database: two pumps on the same outbox keep the
// feed's order only through the Sink's dedup. Stats reports what the pump did
// and whether it is backing off; ReadCounts, ListPending and ListDead read the
// table from any process. A pending row that keeps failing shows its
// attempt_count, last_error and last_attempt_at in ListPending; a row that must
// be abandoned can be marked dead with MarkDead, after which the rows behind
// it proceed. Published rows are kept until Prune deletes them.
package outbox
