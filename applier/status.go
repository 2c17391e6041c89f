package applier

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/controlfeed/controlfeed/feed"
)

var (
	// ErrSecurityHalted is wrapped by Step's error when an event failed the
	// trust checks (StateSecurityHalted), and by Skip's when it refuses to
	// pass such an event without SkipSecurityHalt.
	ErrSecurityHalted = errors.New("applier security-halted")
	// ErrHalted is wrapped by Step's error when an event could not be
	// applied and the applier is halted at it.
	ErrHalted = errors.New("applier halted")
	// ErrNotHalted is wrapped by Skip's error when the event is not the one
	// the applier is halted at.
	ErrNotHalted = errors.New("event is not the halted event")
)

// Status is a snapshot of an Applier's in-memory state. The pointers are
// copies owned by the caller.
type Status struct {
	// State is what the latest round ended in: applying, halted,
	// unavailable, gap or behind retention (StateStarting before the
	// first). Halted, Unavailable, Gap and BehindRetention hold the
	// detail of the corresponding state.
	State State
	// Cursor is the highest ControlVersion the node has moved past.
	Cursor uint64
	// Head is the feed's newest ControlVersion, valid when HeadKnown (the
	// Source implements feed.HeadReporter and answered). Lag is
	// Head - Cursor.
	Head      uint64
	HeadKnown bool
	// HeadError is the latest failed read of the feed's head and
	// HeadErrorSince the first failure since the last successful read
	// (zero when the last read succeeded). While reads fail Head keeps its
	// last value, which may be stale: the lag it gives may be too low.
	HeadError      string
	HeadErrorSince time.Time
	// Applied, Skipped and Duplicates count, since New, events whose
	// handler ran, events passed over by an operator's Skip, and events
	// already recorded in controlfeed_applied_events (redeliveries).
	Applied, Skipped, Duplicates uint64
	// Conflicts counts conflicting duplicates detected since New: an
	// already-applied EventID delivered with different content (see
	// ErrConflict). Each halts the applier at that event.
	Conflicts uint64
	// Gaps counts, since New, the gaps in the feed the applier met (rounds
	// entering StateGap).
	Gaps uint64
	// Halted is the event the applier is halted at (persisted in
	// controlfeed_halt), or nil. It stays set until the cursor moves past
	// the event (it applied, or an operator skipped it), also while a
	// retry meets StateUnavailable.
	Halted *Halt
	// Unavailable is set while State is StateUnavailable: which step
	// failed, at which event, since when. It is never persisted.
	Unavailable *Unavailable
	// Gap is set while State is StateGap: the positions of the hole. It is
	// never persisted.
	Gap *Gap
	// BehindRetention is set while the Source reports that the events after
	// the cursor are gone; the node must be re-bootstrapped.
	BehindRetention *feed.CursorBehindError
	// FeedBehindCursor explains that the feed's head (from a
	// feed.HeadReporter) was below the cursor on two head reads in a row, a
	// second or more apart: the feed was recreated (its positions restart)
	// or lost its newest events, so events it stores at positions up to the
	// cursor would never be applied here. The node must be re-bootstrapped.
	// Once set it stays set for the life of this Applier, also when the
	// head later passes the cursor (that does not bring back what was
	// skipped); a restart after the re-bootstrap clears it. Empty
	// otherwise. The applier goes on polling meanwhile.
	FeedBehindCursor string
	// LastApplyAt is when the last transaction that moved the cursor
	// committed (zero if none yet).
	LastApplyAt time.Time
	// Waiting names the oldest call to the feed or the artifact store in
	// flight (e.g. "poll of feed jetstream after 41"), and WaitingSince
	// when it started; empty and zero when none is. Each is bounded by
	// Config.CallTimeout. Waiting for new events (feed.Waiter) is not
	// listed: it is the idle state.
	Waiting      string
	WaitingSince time.Time
}

// Halt describes the event an applier is halted at.
type Halt struct {
	EventID        string
	ControlVersion uint64
	Type           string
	// Error is the last attempt's error message.
	Error string
	// Attempts counts failed attempts at this event.
	Attempts int
	// Since is the first failure, LastAttempt the latest.
	Since, LastAttempt time.Time
	// Security is the trust.Reason name ("unsigned", "bad-signature",
	// "chain-gap", ...) when the event failed the trust checks of
	// Config.Keyring: a security halt, which Skip refuses. "" for an
	// ordinary halt.
	Security string
}

// Stored is the applier state as persisted in the database, readable from
// another process.
type Stored struct {
	// Cursor is the highest ControlVersion the node has moved past.
	Cursor uint64
	// Applied and Skipped count controlfeed_applied_events rows by outcome.
	Applied, Skipped int64
	// Conflicts counts the conflicting duplicates ever detected (rows of
	// controlfeed_conflicts), resolved or not.
	Conflicts int64
	// Halted is the persisted halt, or nil. It is cleared by the applier
	// once it moves past the event, so it may briefly survive a Skip.
	Halted *Halt
	// StateDigest is the state digest at Cursor (read with it), and
	// Checkpoints the kept earlier ones, newest first (see
	// DigestCheckpointEvery).
	StateDigest StateDigest
	Checkpoints []StateDigest
}

// ReadStatus reads the persisted applier state from db, for example for
// `controlfeed status` running beside the daemon. It counts
// controlfeed_applied_events, so it costs time proportional to that table.
func ReadStatus(ctx context.Context, db *sql.DB) (Stored, error) {
	var s Stored
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return s, fmt.Errorf("applier: read status: begin: %w", err)
	}
	defer tx.Rollback()
	if s.StateDigest, err = ReadStateDigest(ctx, tx); err != nil {
		return s, fmt.Errorf("applier: read status: %w", err)
	}
	s.Cursor = s.StateDigest.Cursor
	if s.Checkpoints, err = ReadDigestCheckpoints(ctx, tx); err != nil {
		return s, fmt.Errorf("applier: read status: %w", err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT outcome, COUNT(*) FROM controlfeed_applied_events GROUP BY outcome`)
	if err != nil {
		return s, fmt.Errorf("applier: read status: count applied events: %w", err)
	}
	for rows.Next() {
		var outcome string
		var n int64
		if err := rows.Scan(&outcome, &n); err != nil {
			rows.Close()
			return s, fmt.Errorf("applier: read status: count applied events: %w", err)
		}
		switch outcome {
		case outcomeApplied:
			s.Applied = n
		case outcomeSkipped:
			s.Skipped = n
		}
	}
	if err := rows.Err(); err != nil {
		return s, fmt.Errorf("applier: read status: count applied events: %w", err)
	}
	if s.Halted, err = readHalt(ctx, tx); err != nil {
		return s, fmt.Errorf("applier: read status: %w", err)
	}
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM controlfeed_conflicts`).Scan(&s.Conflicts); err != nil {
		return s, fmt.Errorf("applier: read status: count conflicts: %w", err)
	}
	return s, nil
}

const (
	outcomeApplied = "applied"
	outcomeSkipped = "skipped"
)

// readHalt returns the persisted halt or nil.
func readHalt(ctx context.Context, q Querier) (*Halt, error) {
	var h Halt
	var cv int64
	var since, last string
	err := q.QueryRowContext(ctx, `SELECT event_id, control_version, type, error, attempts, since, last_attempt, security
		FROM controlfeed_halt WHERE id = 1`).Scan(&h.EventID, &cv, &h.Type, &h.Error, &h.Attempts, &since, &last, &h.Security)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read halt: %w", err)
	}
	h.ControlVersion = uint64(cv)
	h.Since, h.LastAttempt = parseTime(since), parseTime(last)
	return &h, nil
}

// Skip is the operator's decision to pass over the event the applier is
// halted at. It records eventID in controlfeed_applied_events with outcome
// 'skipped' and the halted event's ControlVersion and Type; the running
// applier's next retry then treats the event as done and advances the cursor
// past it (Skip itself does not move the cursor). It works from any process
// that can open the database.
//
// If the applier is halted at a conflicting duplicate (ErrConflict: the
// EventID is already applied and this copy differs), Skip marks that
// conflict resolved instead; the original application stays, and the
// applier passes over the copy, counting it as skipped.
//
// Skip returns an error wrapping ErrNotHalted unless eventID is the persisted
// halted event (StateUnavailable and StateGap are never persisted, so a node
// in them cannot be skipped), and an error if the event is already in
// controlfeed_applied_events for another reason. Skipping diverges this node
// from the others unless the event's effect is restored by other means.
func Skip(ctx context.Context, db *sql.DB, eventID string) error {
	return skip(ctx, db, eventID, false)
}

// SkipSecurityHalt is Skip for an event the node refused on the trust
// checks (Halt.Security is set): the explicit override an operator uses
// after finding out who wrote the event and deciding it must be passed (for
// example, the events missing before it are known lost). It records the
// event as skipped, never applied. If the event's signature is valid and
// its seq lies beyond the chain head's next one (a chain-gap: the events
// missing before it are accepted as lost), the node's chain head moves to
// it when the applier passes it (the chain restarts there); otherwise (an
// unsigned, unknown-key, bad or malformed signature, a chain-fork, a
// chain-replay) the chain head stays where it was, so the producer's own
// next event follows on. Like Skip, it also passes an ordinary halt.
func SkipSecurityHalt(ctx context.Context, db *sql.DB, eventID string) error {
	return skip(ctx, db, eventID, true)
}

func skip(ctx context.Context, db *sql.DB, eventID string, security bool) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("applier: skip %q: begin: %w", eventID, err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	h, err := readHalt(ctx, tx)
	if err != nil {
		return fmt.Errorf("applier: skip %q: %w", eventID, err)
	}
	if h == nil {
		return fmt.Errorf("applier: skip %q: the applier of this database is not halted, so there is nothing to skip "+
			"(a node that is unavailable or reports a gap in the feed retries by itself and cannot be skipped; see its /v1/status): %w", eventID, ErrNotHalted)
	}
	if h.EventID != eventID {
		return fmt.Errorf("applier: skip %q: the applier is halted at event %q (control version %d), not this one: %w", eventID, h.EventID, h.ControlVersion, ErrNotHalted)
	}
	if h.Security != "" && !security {
		return fmt.Errorf("applier: skip %q: this is a security halt (%s): the event failed signature or chain verification and may be forged; "+
			"find out who wrote it (docs/SECURITY.md), and only then pass it with the explicit override (controlfeed skip --security-override): %w",
			eventID, h.Security, ErrSecurityHalted)
	}
	var outcome string
	err = tx.QueryRowContext(ctx, `SELECT outcome FROM controlfeed_applied_events WHERE event_id = ?`, eventID).Scan(&outcome)
	switch {
	case err == nil:
		// A conflicting duplicate: the EventID was applied before and
		// this copy (at the halted control version) differs. Skipping
		// it marks the conflict resolved; the original stays applied.
		res, err := tx.ExecContext(ctx, `UPDATE controlfeed_conflicts SET resolution = 'skipped'
			WHERE control_version = ? AND event_id = ?`, int64(h.ControlVersion), eventID)
		if err != nil {
			return fmt.Errorf("applier: skip %q: resolve conflict: %w", eventID, err)
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return fmt.Errorf("applier: skip %q: already recorded with outcome %q", eventID, outcome)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("applier: skip %q: commit: %w", eventID, err)
		}
		return nil
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("applier: skip %q: %w", eventID, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO controlfeed_applied_events (event_id, control_version, type, applied_at, outcome)
		VALUES (?, ?, ?, ?, 'skipped')`, eventID, int64(h.ControlVersion), h.Type, formatTime(time.Now())); err != nil {
		return fmt.Errorf("applier: skip %q: record: %w", eventID, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("applier: skip %q: commit: %w", eventID, err)
	}
	return nil
}
