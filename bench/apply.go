package bench

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"time"

	"github.com/controlfeed/controlfeed/internal/sqlitedb"
	"github.com/controlfeed/controlfeed/kv"
)

func runApply(ctx context.Context, e *env) ([]Result, error) {
	srv, err := startServer(e.dir)
	if err != nil {
		return nil, err
	}
	defer srv.close()
	p, err := newPool(ctx, filepath.Join(e.dir, "artifacts"))
	if err != nil {
		return nil, err
	}
	n := e.cfg.ApplyEvents
	cfg := srv.feedConfig("APPLY", "node-1")
	if err := fillStream(ctx, cfg, p, n); err != nil {
		return nil, err
	}
	db, err := openDB(ctx, filepath.Join(e.dir, "node.db"))
	if err != nil {
		return nil, err
	}
	defer db.Close()
	took, err := catchUp(ctx, db, cfg, p.store, n)
	if err != nil {
		return nil, err
	}
	rate := float64(n) / took.Seconds()
	var rows int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM controlfeed_kv`).Scan(&rows); err != nil {
		return nil, err
	}
	if rows != n {
		return nil, fmt.Errorf("after catch-up the node has %d kv rows, want %d", rows, n)
	}

	raw, err := rawInsert100(ctx, filepath.Join(e.dir, "raw.db"), p, n)
	if err != nil {
		return nil, err
	}
	rep, err := reportsResult(ctx, e, srv, filepath.Join(e.dir, "artifacts"), n)
	if err != nil {
		return nil, fmt.Errorf("catch-up with fleet reports: %w", err)
	}
	return []Result{ratioResult("apply/catch-up", "events/s", rate, raw, 0.5,
		fmt.Sprintf("%d kv.put events from JetStream vs the same rows inserted raw, 100/tx", n)), rep}, nil
}

// rawInsert100 inserts the kv rows of events 1..n, 100 per transaction,
// with the statement the kv handler uses, and returns rows/s.
func rawInsert100(ctx context.Context, path string, p *pool, n int) (float64, error) {
	db, err := sqlitedb.Open(ctx, path)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	if err := kv.Migrate(ctx, db); err != nil {
		return 0, err
	}
	at := time.Now().UTC().Format(time.RFC3339Nano)
	start := time.Now()
	for i := 1; i <= n; i += 100 {
		err := func() error {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer tx.Rollback()
			for j := i; j < i+100 && j <= n; j++ {
				if err := rawPut(ctx, tx, fmt.Sprintf("key/%09d", j), p.payloads[j%poolSize], at); err != nil {
					return err
				}
			}
			return tx.Commit()
		}()
		if err != nil {
			return 0, fmt.Errorf("raw insert: %w", err)
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func rawPut(ctx context.Context, tx *sql.Tx, key string, value []byte, at string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO controlfeed_kv (key, value, version, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version, updated_at = excluded.updated_at`,
		key, value, 1, at)
	return err
}
