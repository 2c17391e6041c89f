package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
)

// ErrDuplicate is wrapped by Append when the outbox already holds an event
// with the same EventID.
var ErrDuplicate = errors.New("event_id already in the outbox")

// Append records e for publication inside the caller's transaction tx: the
// row exists if and only if tx commits, so the event is published exactly
// when the caller's own change is. Append does not commit or roll back tx.
//
// e must pass controlevent.Event.ValidateUnpublished: a non-empty EventID and
// Type, ControlVersion 0, a well-formed Checksum whenever ArtifactRef is set;
// otherwise the error wraps controlevent.ErrInvalid. A zero CreatedAt is set
// to the current time (UTC). An EventID already in the outbox is an error
// wrapping ErrDuplicate; the caller should roll back.
//
// Store the payload in the artifact store before committing tx, so a
// published event never names a missing artifact. After commit, call
// Pump.Notify to publish without waiting for the pump's poll interval.
// Append is safe for concurrent use on different transactions.
//
// Call Append after the transaction's changes, as its last statement before
// Commit: on PostgreSQL it takes the outbox's transaction-scoped advisory
// lock, held until tx ends, so that appending transactions commit in outbox
// order (see "Order on PostgreSQL" in the package doc).
func Append(ctx context.Context, tx *sql.Tx, e controlevent.Event) error {
	if tx == nil {
		return fmt.Errorf("outbox: append %q: nil *sql.Tx", e.EventID)
	}
	if err := e.ValidateUnpublished(); err != nil {
		return fmt.Errorf("outbox: append %q: %w", e.EventID, err)
	}
	if e.CreatedAt.IsZero() {
		e.CreatedAt = time.Now().UTC()
	}
	payload, err := controlevent.Marshal(e)
	if err != nil {
		return fmt.Errorf("outbox: append %q: %w", e.EventID, err)
	}
	res, err := tx.ExecContext(ctx, appendInsert,
		e.EventID, e.Type, e.Key, e.ArtifactRef, e.Checksum, string(payload), appendTime(e.CreatedAt))
	if err != nil {
		return fmt.Errorf("outbox: append %q: insert into controlfeed_outbox: %w", e.EventID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("outbox: append %q: rows affected: %w", e.EventID, err)
	}
	if n == 0 {
		return fmt.Errorf("outbox: append %q: %w", e.EventID, ErrDuplicate)
	}
	return nil
}

// decodePayload turns a row's payload_json back into the event to publish.
// It fails when the payload does not decode, names another event than the
// row's event_id column, or fails ValidateUnpublished: such a row can never
// be published and is marked dead.
func decodePayload(eventID string, payload []byte) (controlevent.Event, error) {
	e, err := controlevent.Decode(payload)
	if err != nil {
		return controlevent.Event{}, fmt.Errorf("payload_json: %w", err)
	}
	if e.EventID != eventID {
		return controlevent.Event{}, fmt.Errorf("payload_json names event_id %q, the row's event_id is %q", truncate(e.EventID), truncate(eventID))
	}
	if err := e.ValidateUnpublished(); err != nil {
		return controlevent.Event{}, fmt.Errorf("payload_json: %w", err)
	}
	return e, nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
