package sqlitedb

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrWriteLockTimeout is wrapped by the error of a BeginTx that waited
// BusyTimeout for another transaction of the same process to end, the
// in-process counterpart of SQLite's SQLITE_BUSY.
var ErrWriteLockTimeout = errors.New("write lock held by another transaction of this process")

// writeLock serialises, in Go, the write transactions a process runs on one
// database file, across every connection of every *sql.DB Open returned for
// that path.
//
// Why: SQLite lets one writer in at a time and makes the others wait in its
// busy handler, which sleeps 1, 2, 5, 10, 15, 20, 25 ... ms between
// attempts and does not wake when the lock is released. A write transaction
// that collides with another one, say a producer's commit and the outbox
// pump's write-back, thus waits at least 1 ms and up to twice the holder's
// time; behind a commit that syncs for 10 ms, 18 ms. Waiting here instead
// wakes the next writer as soon as the holder commits or rolls back, in
// arrival order (a channel's blocked senders are served first in, first
// out). Other processes, and writes outside transactions, still meet at
// SQLite's lock and its busy handler.
type writeLock struct {
	path string
	ch   chan struct{} // capacity 1: full while a write transaction runs
	wait time.Duration // how long lock waits: BusyTimeout (tests shorten it)
	refs int           // guarded by locksMu: Open calls not yet closed
}

var (
	locksMu sync.Mutex
	locks   = map[string]*writeLock{}
)

// acquireLock returns the lock of the database file at key (an absolute
// path), creating it, and counts one more user.
func acquireLock(key string) *writeLock {
	locksMu.Lock()
	defer locksMu.Unlock()
	l := locks[key]
	if l == nil {
		l = &writeLock{path: key, ch: make(chan struct{}, 1), wait: BusyTimeout}
		locks[key] = l
	}
	l.refs++
	return l
}

// release drops one user of l, forgetting it after the last.
func (l *writeLock) release() {
	locksMu.Lock()
	defer locksMu.Unlock()
	if l.refs--; l.refs == 0 && locks[l.path] == l {
		delete(locks, l.path)
	}
}

// lock waits for l until ctx is done or l.wait (BusyTimeout) has passed, as
// SQLite would wait for its own lock.
func (l *writeLock) lock(ctx context.Context) error {
	select {
	case l.ch <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(l.wait)
	defer t.Stop()
	select {
	case l.ch <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("sqlitedb: begin write transaction on %s: %w", l.path, ctx.Err())
	case <-t.C:
		return fmt.Errorf("sqlitedb: begin write transaction on %s: waited %v: %w; a transaction of this process is open too long (or one waits for another while holding it)", l.path, l.wait, ErrWriteLockTimeout)
	}
}

func (l *writeLock) unlock() { <-l.ch }

// connector makes the connections of one Open: the driver's, wrapped so that
// their write transactions take the file's writeLock.
type connector struct {
	base driver.Connector
	lock *writeLock
	once sync.Once
}

func (c *connector) Connect(ctx context.Context) (driver.Conn, error) {
	dc, err := c.base.Connect(ctx)
	if err != nil {
		return nil, err
	}
	inner, ok := dc.(innerConn)
	if !ok {
		dc.Close()
		return nil, fmt.Errorf("sqlitedb: connect: driver connection %T lacks the context methods database/sql needs", dc)
	}
	return &conn{innerConn: inner, lock: c.lock}, nil
}

func (c *connector) Driver() driver.Driver { return c.base.Driver() }

// Close is called once by (*sql.DB).Close.
func (c *connector) Close() error {
	c.once.Do(c.lock.release)
	return nil
}

// innerConn is what the wrapped driver connection must provide; modernc's
// does. Every method but BeginTx is passed through unchanged.
type innerConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

type conn struct {
	innerConn
	lock *writeLock
}

// Unwrap returns the driver's connection (modernc's Limit and other helpers
// look through wrappers with it).
func (c *conn) Unwrap() driver.Conn { return c.innerConn }

// BeginTx takes the file's write lock for a transaction that is not
// read-only (they all start with BEGIN IMMEDIATE, see Open) and holds it
// until Commit or Rollback returns. database/sql always ends a transaction
// with one of them, also when its context is canceled.
func (c *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if opts.ReadOnly {
		return c.innerConn.BeginTx(ctx, opts)
	}
	if err := c.lock.lock(ctx); err != nil {
		return nil, err
	}
	tx, err := c.innerConn.BeginTx(ctx, opts)
	if err != nil {
		c.lock.unlock()
		return nil, err
	}
	return &lockedTx{Tx: tx, lock: c.lock}, nil
}

// Begin is the deprecated form database/sql no longer calls when BeginTx
// exists; it is here so the wrapper never bypasses the lock.
func (c *conn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

type lockedTx struct {
	driver.Tx
	lock *writeLock
	once sync.Once
}

func (t *lockedTx) Commit() error {
	defer t.once.Do(t.lock.unlock)
	return t.Tx.Commit()
}

func (t *lockedTx) Rollback() error {
	defer t.once.Do(t.lock.unlock)
	return t.Tx.Rollback()
}
