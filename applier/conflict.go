package applier

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
)

// ErrConflict is wrapped by the halt error when the feed delivers an event
// whose EventID is already recorded in controlfeed_applied_events with
// different content (another type, key, version, artifact or checksum). The
// applier never applies such an event: EventIDs are unique per change, so
// the copy is a forgery, a corrupted message or a producer bug.
var ErrConflict = errors.New("event id already applied with different content")

// ConflictError describes a conflicting duplicate. It wraps ErrConflict.
type ConflictError struct {
	EventID        string
	ControlVersion uint64 // of the conflicting copy
	// Digest is the conflicting copy's EventDigest; RecordedDigest the one
	// recorded when the EventID was first applied.
	Digest, RecordedDigest string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("event %q at control version %d has digest %s but was applied with digest %s: %v; it was not applied (inspect the producer and the feed, then skip it with \"controlfeed skip\")",
		e.EventID, e.ControlVersion, e.Digest, e.RecordedDigest, ErrConflict)
}

func (e *ConflictError) Unwrap() error { return ErrConflict }

// EventDigest returns "sha256:<hex>" of e's wire encoding with
// ControlVersion zeroed: two deliveries of the same change have the same
// digest whatever their position in the feed. It is recorded with every
// applied event and compared when the EventID shows up again.
func EventDigest(e controlevent.Event) string {
	e.ControlVersion = 0
	// 1 KiB holds a signed event (about 560 bytes) without a heap
	// allocation; larger ones grow.
	var buf [1024]byte
	b, err := controlevent.AppendJSON(buf[:0], e) // json.Marshal's bytes
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	var out [len("sha256:") + 2*sha256.Size]byte
	copy(out[:], "sha256:")
	hex.Encode(out[len("sha256:"):], sum[:])
	return string(out[:])
}

// checkDuplicate is called inside the apply transaction for an event whose
// EventID is already recorded. It returns the outcome to count the event as
// (the recorded one, or "skipped" when an operator skipped this conflicting
// copy), or a *ConflictError when the recorded digest differs from the
// event's. Rows recorded before schema version 2 have no digest and always
// pass.
func checkDuplicate(ctx context.Context, tx *sql.Tx, ev controlevent.Event) (string, error) {
	var outcome, recorded string
	if err := tx.QueryRowContext(ctx, `SELECT outcome, digest FROM controlfeed_applied_events WHERE event_id = ?`,
		ev.EventID).Scan(&outcome, &recorded); err != nil {
		return "", err
	}
	d := EventDigest(ev)
	if recorded == "" || recorded == d {
		return outcome, nil
	}
	var resolution string
	err := tx.QueryRowContext(ctx, `SELECT resolution FROM controlfeed_conflicts WHERE control_version = ? AND event_id = ?`,
		int64(ev.ControlVersion), ev.EventID).Scan(&resolution)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", err
	}
	if resolution == outcomeSkipped {
		return outcomeSkipped, nil
	}
	return "", &ConflictError{EventID: ev.EventID, ControlVersion: ev.ControlVersion, Digest: d, RecordedDigest: recorded}
}

// recordConflict persists a detected conflict (once per control version),
// counts it in Status.Conflicts and logs it at ERROR level.
func (a *Applier) recordConflict(ctx context.Context, cerr error) {
	var ce *ConflictError
	if !errors.As(cerr, &ce) {
		return
	}
	res, err := a.db.ExecContext(ctx, `INSERT INTO controlfeed_conflicts (control_version, event_id, digest, recorded_digest, detected_at)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (control_version) DO NOTHING`,
		int64(ce.ControlVersion), ce.EventID, ce.Digest, ce.RecordedDigest, formatTime(time.Now()))
	if err != nil {
		if ctx.Err() == nil {
			a.log.Error("applier: record conflicting duplicate", "event_id", ce.EventID, "err", err)
		}
		return
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return
	}
	a.mu.Lock()
	a.st.Conflicts++
	a.mu.Unlock()
	a.log.Error("applier: CONFLICT: the feed delivered an already-applied event id with different content; not applied, halting",
		"event_id", ce.EventID, "control_version", ce.ControlVersion, "digest", ce.Digest, "recorded_digest", ce.RecordedDigest)
}
