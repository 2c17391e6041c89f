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
// # State digest
//
// The cursor row also holds the node's state digest, a SHA-256 chain over
// the events it applied or skipped, in order, updated in the same statement
// as the cursor; controlfeed_digest_checkpoints keeps its value at
// positions every node shares (see DigestCheckpointEvery). Nodes that
// applied the same events have the same digest at the same cursor
// (ReadStateDigest); an application adds its own digest through an
// AppDigestFunc (kv.TableDigest). The encoding is documented in digest.go.
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
// # States: halted, unavailable, gap
//
// Every round (Step) ends in one State, reported by Status.State and decided
// in one place, by these rules:
//
//   - Halted: this event cannot be applied. An event that fails Validate,
//     an unknown Type (no handler), an artifact the store confirms missing
//     (artifact.ErrNotFound) or corrupt (artifact.ErrCorrupt), too large, a
//     checksum that does not match the artifact, a handler error, a
//     conflicting duplicate (ErrConflict), or a Source returning
//     ControlVersions that are not strictly ascending. Events of the same
//     batch before the failing one are committed; nothing after it is
//     applied and the cursor stays just before it. The halt is kept in
//     Status.Halted, persisted in controlfeed_halt, logged at ERROR, and
//     retried by Run with capped exponential backoff and jitter (each retry
//     polls again from the cursor). When the event finally applies, the
//     halt is cleared. Only a halt can be skipped.
//   - Unavailable: the infrastructure failed, not the event. A Poll error
//     (other than the cases below), an artifact store that times out, is
//     disconnected or has no quorum (anything but a confirmed bad artifact),
//     an error wrapping feed.ErrUnavailable, and, locally, an apply
//     transaction that fails as a whole (begin, commit: a full disk, a busy
//     or locked database, a write-lock timeout, an I/O error) or a statement
//     inside it that fails with SQLITE_FULL, SQLITE_BUSY, SQLITE_LOCKED,
//     SQLITE_IOERR, ENOSPC and the like. It is reported in
//     Status.Unavailable (which step, which event, since when), logged at
//     WARN, retried with backoff, and never persisted: there is nothing to
//     skip, and Skip refuses.
//   - Gap: the feed did not deliver a position it still holds. For a Source
//     that implements feed.GapChecker (its positions are dense), the applier
//     checks every event it is about to apply against the one before it (the
//     cursor for the first of a batch): when ControlVersion is not the
//     previous one + 1 it calls CheckGap. If the positions between were
//     deleted (nil) it goes on; otherwise it commits the events before the
//     hole, applies nothing past it, reports it in Status.Gap (positions) or,
//     if the feed cannot tell, as unavailable, logs it at ERROR, and polls
//     again with backoff. A Poll error wrapping feed.ErrGap is reported the
//     same way. The cursor never moves over a gap and a gap cannot be
//     skipped. A Source without GapChecker may have sparse positions; the
//     applier then only checks that they ascend.
//   - Behind retention: see below.
//
// An operator who decides a halted event must be passed over calls Skip
// with its EventID, from any process that can open the database. Skip
// records the event in controlfeed_applied_events with outcome 'skipped';
// the running applier's next retry treats it like a duplicate and moves on.
// Nothing else ever skips an event: silently skipping would let nodes
// diverge.
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
// applied, ErrUnavailable when the feed, the store or the database failed,
// feed.ErrGap when the feed skipped a position it holds, and
// feed.ErrCursorBehindRetention when the node fell behind the feed's
// retention; each also wraps the cause. Skip returns an error wrapping
// ErrNotHalted when the event is not the halted one.
package applier
