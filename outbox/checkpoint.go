package outbox

import (
	"context"
	"time"
)

// checkpointLoop runs the dialect's background WAL checkpoint (SQLite:
// PRAGMA wal_checkpoint(PASSIVE)) on a pool connection after passes that
// wrote, at most every Config.CheckpointInterval, until ctx is done.
//
// Why: SQLite otherwise checkpoints inside whichever commit grows the WAL
// past its automatic-checkpoint threshold, the producer's or a write-back,
// and that commit then takes 10-90 ms on a slow disk (copying pages and
// syncing the database file). Checkpointing often from here keeps the WAL
// far below that threshold (sqlitedb.AutoCheckpointPages, 10000 pages for
// databases opened with sqlitedb.Open; SQLite's default 1000 was crossed
// between two of these checkpoints at 1000 events/s), so commits do not pay
// for it. A PASSIVE checkpoint never blocks writers or readers; a failure is
// logged and retried after the next pass. What a commit still pays: the
// first commit after a complete checkpoint restarts the WAL and syncs its
// header (one small fsync per checkpoint).
func (p *Pump) checkpointLoop(ctx context.Context, kick <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		}
		var busy, logPages, done int64
		if err := p.db.QueryRowContext(ctx, p.dia.checkpoint).Scan(&busy, &logPages, &done); err != nil && ctx.Err() == nil {
			p.log.Debug("outbox: background checkpoint", "err", err)
		}
		t := time.NewTimer(p.cfg.CheckpointInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
