package applier

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strings"
)

// insertApplied records one applied event. Args: event_id, control_version,
// type, applied_at, digest. A recorded event_id affects no row.
const insertApplied = `INSERT INTO controlfeed_applied_events (event_id, control_version, type, applied_at, outcome, digest)
		VALUES (?, ?, ?, ?, 'applied', ?) ON CONFLICT (event_id) DO NOTHING`

// recordChunk bounds the rows of one multi-row insert (5 bind parameters
// each, well under SQLite's limit).
const recordChunk = 512

// errNotFresh reports that recordBatch found an event already recorded: the
// transaction must be rolled back and the batch applied event by event.
var errNotFresh = errors.New("applier: batch holds an event already recorded")

// recordBatch inserts plan's controlfeed_applied_events rows (outcome
// 'applied') in multi-row statements, in plan order, before any handler
// runs. It returns false, doing nothing, when an event's ControlVersion does
// not fit SQL's integer (the per-event path reports it), and errNotFresh
// when some event was recorded already (the caller rolls back).
func recordBatch(ctx context.Context, tx *sql.Tx, plan []item, now string) (bool, error) {
	for _, it := range plan {
		if it.ev.ControlVersion > math.MaxInt64 {
			return false, nil
		}
	}
	for len(plan) > 0 {
		part := plan[:min(recordChunk, len(plan))]
		plan = plan[len(part):]
		var q strings.Builder
		q.WriteString(`INSERT INTO controlfeed_applied_events (event_id, control_version, type, applied_at, outcome, digest) VALUES `)
		// Anonymous parameters only: the driver looks up each parameter's
		// name, which SQLite finds by a linear scan of the named ones.
		args := make([]any, 0, 5*len(part))
		for i := range part {
			it := &part[i]
			if i > 0 {
				q.WriteString(", ")
			}
			q.WriteString("(?, ?, ?, ?, 'applied', ?)")
			args = append(args, it.ev.EventID, int64(it.ev.ControlVersion), it.ev.Type, now, it.digest())
		}
		q.WriteString(` ON CONFLICT (event_id) DO NOTHING`)
		res, err := tx.ExecContext(ctx, q.String(), args...)
		if err != nil {
			return false, fmt.Errorf("applier: record %d events (control versions %d..%d): %w",
				len(part), part[0].ev.ControlVersion, part[len(part)-1].ev.ControlVersion, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return false, fmt.Errorf("applier: record %d events: %w", len(part), err)
		}
		if n != int64(len(part)) {
			return false, errNotFresh
		}
	}
	return true, nil
}
