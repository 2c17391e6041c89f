package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
)

// DefaultListLimit is the number of rows ListPending and ListDead return when
// their limit is 0 or negative.
const DefaultListLimit = 100

// Counts summarises the outbox for operators.
type Counts struct {
	// Pending rows wait to be published.
	Pending int64
	// Published rows carry their ControlVersion (until Prune deletes them).
	Published int64
	// Dead rows were abandoned and will never be published.
	Dead int64
	// OldestPending is the earliest CreatedAt among pending rows; zero when
	// nothing is pending. now - OldestPending is the producer-side lag.
	OldestPending time.Time
}

// Row is one outbox row as operators see it.
type Row struct {
	// ID is the row's position in the outbox order.
	ID int64
	// Event is the event to publish, decoded from payload_json. For a row
	// whose payload does not decode (a dead row), it is assembled from the
	// row's columns instead.
	Event controlevent.Event
	// AttemptCount counts publish attempts, failed and successful.
	AttemptCount int
	// LastError is the error of the latest failed attempt, kept after a
	// later success for the record; empty if no attempt failed.
	LastError string
	// LastAttemptAt is when the latest attempt ended; zero if none.
	LastAttemptAt time.Time
	// PublishedControlVersion is the ControlVersion the Sink stamped; 0
	// while pending.
	PublishedControlVersion uint64
	// PublishedAt is when the write-back recorded the publication.
	PublishedAt time.Time
	// DeadReason says why the row was abandoned; empty unless dead.
	DeadReason string
	// DeadAt is when the row was abandoned; zero unless dead.
	DeadAt time.Time
}

// ReadCounts returns the number of pending, published and dead rows and the
// age of the oldest pending one. It reads a consistent snapshot and is safe
// to call from any process while a pump runs.
func ReadCounts(ctx context.Context, db *sql.DB) (Counts, error) {
	var (
		c      Counts
		oldest nullTime
	)
	if db == nil {
		return c, errors.New("outbox: read counts: nil *sql.DB")
	}
	if err := db.QueryRowContext(ctx, dialectOf(db).counts).Scan(&c.Pending, &c.Published, &c.Dead, &oldest); err != nil {
		return Counts{}, fmt.Errorf("outbox: read counts: %w", err)
	}
	c.OldestPending = oldest.t
	return c, nil
}

// ListPending returns up to limit pending rows in outbox order (the order
// they will be published in). limit <= 0 means DefaultListLimit.
func ListPending(ctx context.Context, db *sql.DB, limit int) ([]Row, error) {
	return listRows(ctx, db, "list pending", dialectOf(db).listPending, limit)
}

// ListDead returns up to limit dead rows in outbox order. limit <= 0 means
// DefaultListLimit.
func ListDead(ctx context.Context, db *sql.DB, limit int) ([]Row, error) {
	return listRows(ctx, db, "list dead", dialectOf(db).listDead, limit)
}

func listRows(ctx context.Context, db *sql.DB, op, query string, limit int) ([]Row, error) {
	if db == nil {
		return nil, fmt.Errorf("outbox: %s: nil *sql.DB", op)
	}
	if limit <= 0 {
		limit = DefaultListLimit
	}
	rows, err := db.QueryContext(ctx, query, limit)
	if err != nil {
		return nil, fmt.Errorf("outbox: %s: %w", op, err)
	}
	defer rows.Close()
	var out []Row
	for rows.Next() {
		var (
			r                                    Row
			typ, key, ref, sum, payload, lastErr string
			createdAt, lastAttempt, pubAt, dead  nullTime
			cv                                   sql.NullInt64
			reason                               sql.NullString
		)
		if err := rows.Scan(&r.ID, &r.Event.EventID, &typ, &key, &ref, &sum, &payload, &createdAt,
			&r.AttemptCount, &lastErr, &lastAttempt, &cv, &pubAt, &reason, &dead); err != nil {
			return nil, fmt.Errorf("outbox: %s: scan: %w", op, err)
		}
		if e, err := decodePayload(r.Event.EventID, []byte(payload)); err == nil {
			r.Event = e
		} else {
			r.Event = controlevent.Event{EventID: r.Event.EventID, Type: typ, Key: key,
				ArtifactRef: ref, Checksum: sum, CreatedAt: createdAt.t}
		}
		r.LastError = lastErr
		r.LastAttemptAt = lastAttempt.t
		if cv.Valid {
			r.PublishedControlVersion = uint64(cv.Int64)
		}
		r.PublishedAt = pubAt.t
		r.DeadReason = reason.String
		r.DeadAt = dead.t
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox: %s: %w", op, err)
	}
	return out, nil
}

// ErrNotPending is wrapped by MarkDead when no pending row has the EventID
// (it does not exist, was published, or is dead already).
var ErrNotPending = errors.New("no pending outbox row with this event_id")

// MarkDead abandons the pending row with eventID: it will never be published,
// and the rows behind it proceed. This is the operator's way out of a row the
// Sink rejects forever. The reason is recorded (empty becomes "marked dead by
// operator"). Safe to call while a pump runs: a row the pump is publishing at
// that moment may still reach the feed, and then stays dead in the outbox.
func MarkDead(ctx context.Context, db *sql.DB, eventID, reason string) error {
	if db == nil {
		return fmt.Errorf("outbox: mark dead %q: nil *sql.DB", eventID)
	}
	if reason == "" {
		reason = "marked dead by operator"
	}
	d := dialectOf(db)
	res, err := db.ExecContext(ctx, d.markDeadByEventID, reason, d.timeValue(time.Now()), eventID)
	if err != nil {
		return fmt.Errorf("outbox: mark dead %q: %w", eventID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("outbox: mark dead %q: rows affected: %w", eventID, err)
	}
	if n == 0 {
		return fmt.Errorf("outbox: mark dead %q: %w", eventID, ErrNotPending)
	}
	return nil
}

// Prune deletes published rows whose write-back happened before before, and
// returns how many it deleted. Pending and dead rows are never deleted. Ids
// are never reused, so pruning does not disturb the outbox order.
func Prune(ctx context.Context, db *sql.DB, before time.Time) (int64, error) {
	if db == nil {
		return 0, errors.New("outbox: prune: nil *sql.DB")
	}
	d := dialectOf(db)
	res, err := db.ExecContext(ctx, d.prune, d.timeValue(before))
	if err != nil {
		return 0, fmt.Errorf("outbox: prune published before %s: %w", before.UTC().Format(time.RFC3339), err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("outbox: prune: rows affected: %w", err)
	}
	return n, nil
}

// nullTime scans a nullable time column stored either as text (RFC 3339,
// as the SQLite dialect writes it) or as a native time.
type nullTime struct{ t time.Time }

func (n *nullTime) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		n.t = time.Time{}
	case time.Time:
		n.t = x.UTC()
	case string:
		return n.parse(x)
	case []byte:
		return n.parse(string(x))
	default:
		return fmt.Errorf("outbox: scan time: unsupported type %T", v)
	}
	return nil
}

func (n *nullTime) parse(s string) error {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("outbox: scan time %q: %w", truncate(s), err)
	}
	n.t = t.UTC()
	return nil
}
