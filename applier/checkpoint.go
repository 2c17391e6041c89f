package applier

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"time"
)

// checkpointEvery is the least time between two background WAL checkpoints
// while Run commits.
const checkpointEvery = 200 * time.Millisecond

// writer is Run's dedicated connection for apply transactions, with
// SQLite's automatic checkpoint turned off on it, and the goroutine that
// checkpoints the WAL instead, off the apply path.
//
// Why: SQLite runs an automatic checkpoint inside the commit that grows the
// WAL past 1000 pages, copying pages into the database file and syncing it;
// on a slow disk that commit takes 10-20 ms, which a node in steady state
// adds to the latency of every event queued behind it. A PASSIVE checkpoint
// on another connection does the same work without blocking the writer.
type writer struct {
	conn *sql.Conn
	// autoPages is the connection's wal_autocheckpoint before Run turned
	// it off, put back before the connection returns to the pool.
	autoPages int
	kick      chan struct{} // capacity 1: "committed since the last checkpoint"
	done      chan struct{}
}

// startWriter pins a connection for Run's transactions and starts the
// checkpointer. It returns nil (Run then uses the pool, with SQLite's own
// checkpoints) if the pool allows fewer than 3 connections, or the
// connection cannot be had or configured.
func (a *Applier) startWriter(ctx context.Context) *writer {
	if m := a.db.Stats().MaxOpenConnections; m > 0 && m < 3 {
		// Pinning one would starve Step's reads (and the checkpointer).
		return nil
	}
	conn, err := a.db.Conn(ctx)
	if err != nil {
		a.log.Debug("applier: no dedicated connection; using the pool", "err", err)
		return nil
	}
	var pages int
	if err := conn.QueryRowContext(ctx, `PRAGMA wal_autocheckpoint`).Scan(&pages); err != nil {
		a.log.Debug("applier: cannot read the automatic checkpoint setting; using the pool", "err", err)
		conn.Close()
		return nil
	}
	if _, err := conn.ExecContext(ctx, `PRAGMA wal_autocheckpoint = 0`); err != nil {
		a.log.Debug("applier: cannot turn off automatic checkpoints; using the pool", "err", err)
		conn.Close()
		return nil
	}
	w := &writer{conn: conn, autoPages: pages, kick: make(chan struct{}, 1), done: make(chan struct{})}
	go w.checkpointLoop(ctx, a)
	return w
}

// committed tells the checkpointer a transaction committed. It never blocks.
func (w *writer) committed() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// stop waits for the checkpointer (ctx must be done), runs a last
// checkpoint, restores automatic checkpoints on the connection and returns
// it to the pool.
func (w *writer) stop(a *Applier) {
	<-w.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a.checkpoint(ctx)
	if _, err := w.conn.ExecContext(ctx, fmt.Sprintf(`PRAGMA wal_autocheckpoint = %d`, w.autoPages)); err != nil {
		// The connection would keep checkpoints off: drop it instead.
		_ = w.conn.Raw(func(any) error { return driver.ErrBadConn })
	}
	w.conn.Close()
}

func (w *writer) checkpointLoop(ctx context.Context, a *Applier) {
	defer close(w.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		}
		a.checkpoint(ctx)
		sleep(ctx, checkpointEvery)
	}
}

// checkpoint runs a PASSIVE checkpoint on a pool connection: it copies what
// it can without waiting for readers or the writer. Failures are logged; the
// next one retries.
func (a *Applier) checkpoint(ctx context.Context) {
	var busy, logPages, done int64
	if err := a.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &logPages, &done); err != nil && ctx.Err() == nil {
		a.log.Debug("applier: background checkpoint", "err", err)
	}
}
