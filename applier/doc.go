// Package applier is the consumer side of a controlfeed: it reads control
// events from a feed.Source after the node's cursor, fetches and verifies each
// event's payload from an artifact.Store, and applies it to the node's SQLite
// database through a Handler chosen by the event's Type.
//
// State lives in three tables created by Migrate: controlfeed_cursor (the
// highest ControlVersion the node has moved past), controlfeed_applied_events
// (one row per EventID applied or skipped, with its outcome) and
// controlfeed_halt (the event the applier is stuck on, if any, so another
// process such as `controlfeed status` can see it).
//
// # Delivery semantics
//
// Events are applied in ascending ControlVersion order. For each event the
// handler runs inside the same SQLite transaction that inserts the event's
// row into controlfeed_applied_events and advances the cursor, so the effect,
// the record of it and the progress commit or roll back together. An EventID
// already present in controlfeed_applied_events (a duplicate published past
// the broker's dedup window, or a redelivery) only advances the cursor: its
// handler never runs twice, which makes the effect exactly-once even though
// delivery is at-least-once.
//
// Acknowledgement happens only after commit. If the Source implements
// feed.CumulativeAcker, the applier calls AckThrough once with the last event
// of each committed batch; otherwise, if it implements feed.Acker, it calls Ack
// for each committed event; otherwise it acknowledges nothing. Ack errors are
// logged and otherwise ignored: the broker redelivers, and the duplicate
// check absorbs the redelivery.
//
// When Poll returns many events (catch-up), up to Config.MaxBatch of them are
// applied in one transaction; when one event is available (steady state) it
// is applied in a transaction of its own. A batch of events not yet recorded
// runs without savepoints; if one of its events fails, the transaction is
// rolled back and redone with a SAVEPOINT per event up to the failing one,
// so the events before it commit (their handlers run twice, see Handler).
// Payloads are fetched and verified before the transaction opens, so the
// database write lock is not held during network I/O. During a catch-up the
// next batch's payloads are fetched while the current batch commits, and,
// when a batch ends a full Poll, the next Poll is made in the background
// meanwhile too; the Source is still called by one goroutine at a time.
//
// # Halting and skipping
//
// Any failure to apply an event halts the applier at that event: an event
// that fails Validate, an unknown Type (no handler), a missing or corrupt
// artifact, a checksum that does not match the artifact, a handler error, or
// a Source returning ControlVersions that are not strictly ascending. Events
// of the same batch before the failing one are committed; nothing after it is
// applied and the cursor stays just before it. The halt is kept in Status,
// persisted in controlfeed_halt, logged, and retried by Run with capped
// exponential backoff and jitter (each retry polls again from the cursor).
// When the event finally applies, the halt is cleared.
//
// An operator who decides the event must be passed over calls Skip with its
// EventID, from any process that can open the database. Skip records the
// event in controlfeed_applied_events with outcome 'skipped'; the running
// applier's next retry treats it like a duplicate and moves on. Nothing else
// ever skips an event: silently skipping would let nodes diverge.
//
// A Source error wrapping feed.ErrCursorBehindRetention means the node can no
// longer catch up by replay. The applier stops applying, reports it in
// Status.BehindRetention and at ERROR level, and keeps checking slowly, so a
// node that is re-bootstrapped from a snapshot (see SetCursor) resumes by
// itself.
//
// # Crash safety
//
// A crash at any point leaves the database at the last committed
// transaction: the cursor, controlfeed_applied_events and the handlers'
// effects always agree. After a restart the applier polls from the committed
// cursor; events applied but not acknowledged are redelivered by the broker
// and recognised as duplicates.
//
// # Errors
//
// Errors begin with "applier:" and name the operation and the event.
// Step returns an error wrapping ErrHalted when an event could not be
// applied, one wrapping feed.ErrCursorBehindRetention when the node fell
// behind the feed's retention, and the Source's error otherwise. Skip returns
// an error wrapping ErrNotHalted when the event is not the halted one.
package applier
