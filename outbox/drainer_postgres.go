package outbox

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// drainerIdleFactor: the server ends a drainer-lock session that sent
// nothing for DrainerLockInterval times this (idle_session_timeout), which
// releases the lock of a holder cut off by the network. The holder itself
// stops after two intervals without a confirmed session, well before.
const drainerIdleFactor = 5

// minDrainerIdle is the least idle_session_timeout of a lock session, so
// that a short DrainerLockInterval (tests) does not make a busy holder lose
// its session to a late confirmation.
const minDrainerIdle = 2 * time.Second

// runExclusive is Run on a database with a drainer lock: stand by until the
// lock is taken, drain while it is held, stand by again when it is lost,
// until ctx is done.
func (p *Pump) runExclusive(ctx context.Context) error {
	for {
		p.setStandby(true)
		lock, err := p.takeDrainerLock(ctx)
		if err != nil {
			return nil // ctx is done
		}
		p.setStandby(false)
		p.mu.Lock()
		p.stats.Takeovers++
		p.mu.Unlock()
		p.log.Info("outbox: this pump holds the drainer lock and publishes")
		err = p.drain(lock.ctx)
		lost := lock.lostErr()
		lock.release()
		if ctx.Err() != nil {
			return err
		}
		p.log.Warn("outbox: lost the drainer lock; standing by", "err", lost)
		if err != nil {
			p.log.Warn("outbox: drain after losing the drainer lock", "err", err)
		}
		// Leave the lock to a standby first: they retry every interval,
		// so this pump takes it back only if none is there.
		p.setStandby(true)
		t := time.NewTimer(2 * p.cfg.DrainerLockInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func (p *Pump) setStandby(b bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats.Standby = b
}

// drainerLock is a held drainer lock: its dedicated session and a context
// canceled when the session cannot be confirmed any more.
type drainerLock struct {
	conn   *sql.Conn
	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{}
}

// takeDrainerLock tries to take the lock every DrainerLockInterval until it
// succeeds or ctx is done (then it returns ctx's error).
func (p *Pump) takeDrainerLock(ctx context.Context) (*drainerLock, error) {
	logged := false
	for {
		l, err := p.tryDrainerLock(ctx)
		if l != nil {
			return l, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil {
			p.log.Warn("outbox: try the drainer lock", "err", err)
		} else if !logged {
			p.log.Info("outbox: another pump holds the drainer lock; standing by", "retry_every", p.cfg.DrainerLockInterval)
			logged = true
		}
		t := time.NewTimer(p.cfg.DrainerLockInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// tryDrainerLock makes one attempt: nil and no error when another session
// holds the lock.
func (p *Pump) tryDrainerLock(ctx context.Context) (*drainerLock, error) {
	conn, err := p.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("outbox: drainer lock: get a connection: %w", err)
	}
	// The server ends the session if the holder goes silent (a network
	// cut), which releases the lock; PostgreSQL 14+. Older servers refuse
	// the setting and rely on TCP keepalives.
	idle := strconv.FormatInt(max(p.cfg.DrainerLockInterval*drainerIdleFactor, minDrainerIdle).Milliseconds(), 10)
	if _, err := conn.ExecContext(ctx, `SELECT set_config('idle_session_timeout', $1, false)`, idle); err != nil {
		p.log.Debug("outbox: drainer lock: idle_session_timeout not set", "err", err)
	}
	var got bool
	if err := conn.QueryRowContext(ctx, p.dia.drainerLock).Scan(&got); err != nil {
		discard(conn)
		return nil, fmt.Errorf("outbox: drainer lock: %w", err)
	}
	if !got {
		// Back to the pool without the session settings.
		if _, err := conn.ExecContext(ctx, `SELECT set_config('idle_session_timeout', '0', false)`); err != nil {
			discard(conn)
			return nil, nil
		}
		conn.Close()
		return nil, nil
	}
	l := &drainerLock{conn: conn, done: make(chan struct{})}
	l.ctx, l.cancel = context.WithCancelCause(ctx)
	go p.watchDrainerLock(l)
	return l, nil
}

// watchDrainerLock confirms the lock session every DrainerLockInterval and
// cancels l.ctx when a confirmation fails or does not come within an
// interval: the server may then release the lock to another pump, so this
// one must stop publishing.
func (p *Pump) watchDrainerLock(l *drainerLock) {
	defer close(l.done)
	t := time.NewTicker(p.cfg.DrainerLockInterval)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(l.ctx, p.cfg.DrainerLockInterval)
		var one int
		err := l.conn.QueryRowContext(cctx, `SELECT 1`).Scan(&one)
		cancel()
		if err != nil && l.ctx.Err() == nil {
			l.cancel(fmt.Errorf("outbox: drainer lock session lost: %w", err))
			return
		}
	}
}

// lostErr says why the lock was lost; nil if it was not (Run's own stop).
func (l *drainerLock) lostErr() error {
	if err := context.Cause(l.ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// release ends the lock's session (which releases the lock) and waits for
// its watcher.
func (l *drainerLock) release() {
	l.cancel(context.Canceled)
	<-l.done
	discard(l.conn)
}

// discard closes conn's session instead of returning it to the pool.
func discard(conn *sql.Conn) {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	conn.Close()
}
