package outbox

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/controlfeed/controlfeed/internal/backoff"
)

// listenLoop wakes the pump on PostgreSQL notifications: the outbox's insert
// trigger notifies pgNotifyChannel, with the table's schema as payload, when
// an appending transaction commits, whichever process committed it. It
// holds one pool connection LISTENing until ctx is done, and calls Notify
// for every notification of its own schema and once after each (re)LISTEN,
// for rows committed while it was not listening.
//
// A notification is only a wake-up: it can be lost (the listening
// connection breaks; a transaction-pooling PgBouncer between the pump and
// the server does not keep LISTEN sessions), so Run still polls every
// Config.PollInterval, which bounds the delay when one is lost. A broken
// connection is retried with backoff and logged at DEBUG; it never fails
// Run.
func (p *Pump) listenLoop(ctx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		err := p.listen(ctx, func() { failures = 0 })
		if ctx.Err() != nil {
			return
		}
		failures++
		d := backoff.Delay(failures, p.cfg.MinBackoff, p.cfg.MaxBackoff)
		p.log.Debug("outbox: LISTEN connection lost; polling until it is back", "err", err, "retry_in", d)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// errListenDone discards the listening connection from the pool: it may
// still be subscribed, or broken.
var errListenDone = fmt.Errorf("outbox: listen ended: %w", driver.ErrBadConn)

// listen LISTENs on one connection and waits for notifications until ctx is
// done or the connection fails. listening is called once LISTEN succeeded.
func (p *Pump) listen(ctx context.Context, listening func()) error {
	conn, err := p.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("outbox: listen: get a connection: %w", err)
	}
	defer conn.Close()
	var loopErr error
	err = conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			loopErr = fmt.Errorf("outbox: listen: driver connection is %T, not pgx's", dc)
			return errListenDone
		}
		pc := sc.Conn()
		var schema string
		if err := pc.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
			loopErr = fmt.Errorf("outbox: listen: current_schema: %w", err)
			return errListenDone
		}
		if _, err := pc.Exec(ctx, `LISTEN `+pgNotifyChannel); err != nil {
			loopErr = fmt.Errorf("outbox: listen on %s: %w", pgNotifyChannel, err)
			return errListenDone
		}
		listening()
		p.Notify()
		for {
			n, err := pc.WaitForNotification(ctx)
			if err != nil {
				loopErr = fmt.Errorf("outbox: wait for notifications on %s: %w", pgNotifyChannel, err)
				return errListenDone
			}
			if n.Payload == schema {
				p.Notify()
			}
		}
	})
	if loopErr != nil {
		return loopErr
	}
	if err != nil && !errors.Is(err, driver.ErrBadConn) {
		return err
	}
	return errors.New("outbox: listen: connection discarded")
}
