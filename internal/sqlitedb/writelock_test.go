package sqlitedb

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func openT(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// beginAsync starts a write transaction on db in a goroutine; the returned
// channel yields it (or the error) once BeginTx returns.
type began struct {
	tx  *sql.Tx
	err error
}

func beginAsync(ctx context.Context, db *sql.DB) <-chan began {
	ch := make(chan began, 1)
	go func() {
		tx, err := db.BeginTx(ctx, nil)
		ch <- began{tx, err}
	}()
	return ch
}

// A second write transaction, on another *sql.DB of the same file, begins
// only after the first one ends, and then sees its committed row; read-only
// transactions are not held up meanwhile.
func TestWriteLock_SerialisesWritersAcrossHandles(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "w.db")
	a, b := openT(t, path), openT(t, path)
	if _, err := a.ExecContext(ctx, `CREATE TABLE t (v INTEGER)`); err != nil {
		t.Fatal(err)
	}
	tx1, err := a.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx1.ExecContext(ctx, `INSERT INTO t VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	second := beginAsync(ctx, b)

	ro, err := b.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only transaction while a writer holds the lock: %v", err)
	}
	var n int
	if err := ro.QueryRowContext(ctx, `SELECT COUNT(*) FROM t`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	ro.Rollback()
	if n != 0 {
		t.Fatalf("reader saw %d uncommitted rows", n)
	}
	select {
	case r := <-second:
		t.Fatalf("second writer began (err %v) while the first was open", r.err)
	default:
	}

	if err := tx1.Commit(); err != nil {
		t.Fatal(err)
	}
	var r began
	select {
	case r = <-second:
	case <-time.After(time.Minute):
		t.Fatal("second writer still waiting a minute after the first committed")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if err := r.tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM t`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("second writer sees %d rows, want the first's 1", n)
	}
	if err := r.tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	// The lock is free again after a Rollback.
	tx3, err := a.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	tx3.Rollback()
}

// A waiting BeginTx ends with the context's error when its context is
// canceled, and the holder's transaction is unaffected.
func TestWriteLock_WaitEndsWithContext(t *testing.T) {
	ctx := context.Background()
	db := openT(t, filepath.Join(t.TempDir(), "c.db"))
	tx1, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx1.Rollback()
	cctx, cancel := context.WithCancel(ctx)
	second := beginAsync(cctx, db)
	cancel()
	r := <-second
	if !errors.Is(r.err, context.Canceled) {
		if r.tx != nil {
			r.tx.Rollback()
		}
		t.Fatalf("BeginTx with a canceled context while locked: %v, want context.Canceled", r.err)
	}
	if _, err := tx1.ExecContext(ctx, `CREATE TABLE t (v INTEGER)`); err != nil {
		t.Fatalf("holder after a waiter gave up: %v", err)
	}
}

// A BeginTx that waits out the lock's timeout fails with
// ErrWriteLockTimeout, the way SQLite fails with SQLITE_BUSY.
func TestWriteLock_Timeout(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "to.db")
	db := openT(t, path)
	key, _ := filepath.Abs(path)
	locksMu.Lock()
	locks[key].wait = 10 * time.Millisecond
	locksMu.Unlock()
	tx1, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx1.Rollback()
	tx2, err := db.BeginTx(ctx, nil)
	if err == nil {
		tx2.Rollback()
		t.Fatal("second BeginTx succeeded while the first transaction was open")
	}
	if !errors.Is(err, ErrWriteLockTimeout) {
		t.Fatalf("err = %v, want ErrWriteLockTimeout", err)
	}
}

// Many writers on two handles of one file all commit: none fails with
// SQLITE_BUSY, and no increment is lost.
func TestWriteLock_ConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "n.db")
	dbs := []*sql.DB{openT(t, path), openT(t, path)}
	if _, err := dbs[0].ExecContext(ctx, `CREATE TABLE c (n INTEGER); INSERT INTO c VALUES (0)`); err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db := dbs[w%2]
			for range each {
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					errs <- err
					return
				}
				var n int
				if err := tx.QueryRowContext(ctx, `SELECT n FROM c`).Scan(&n); err != nil {
					tx.Rollback()
					errs <- err
					return
				}
				if _, err := tx.ExecContext(ctx, `UPDATE c SET n = ?`, n+1); err != nil {
					tx.Rollback()
					errs <- err
					return
				}
				if err := tx.Commit(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var n int
	if err := dbs[1].QueryRowContext(ctx, `SELECT n FROM c`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != workers*each {
		t.Fatalf("counter = %d, want %d", n, workers*each)
	}
}

// The lock is shared while any handle of the file is open and forgotten
// after the last one closes.
func TestWriteLock_RefCount(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.db")
	key, _ := filepath.Abs(path)
	ctx := context.Background()
	a, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	locksMu.Lock()
	_, ok := locks[key]
	locksMu.Unlock()
	if !ok {
		t.Fatal("lock forgotten while a handle is still open")
	}
	b.Close()
	b.Close() // a second Close must not drop another handle's reference
	locksMu.Lock()
	_, ok = locks[key]
	locksMu.Unlock()
	if ok {
		t.Fatal("lock kept after every handle closed")
	}
}
