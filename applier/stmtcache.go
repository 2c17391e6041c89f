package applier

import (
	"context"
	"database/sql"
)

// stmtCacheKey is the context key under which the applier passes a
// transaction's statement cache to its handlers.
type stmtCacheKey struct{}

// stmtCache holds the statements prepared in one apply transaction, by SQL
// text. database/sql closes them when the transaction ends. Only the
// applier's goroutine uses it (handlers run one at a time).
type stmtCache struct {
	tx    *sql.Tx
	stmts map[string]*sql.Stmt
}

func withStmtCache(ctx context.Context, tx *sql.Tx) (context.Context, *stmtCache) {
	c := &stmtCache{tx: tx, stmts: make(map[string]*sql.Stmt)}
	return context.WithValue(ctx, stmtCacheKey{}, c), c
}

func (c *stmtCache) prepare(ctx context.Context, query string) (*sql.Stmt, error) {
	if s, ok := c.stmts[query]; ok {
		return s, nil
	}
	s, err := c.tx.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	c.stmts[query] = s
	return s, nil
}

// Exec runs query with args in tx, like tx.ExecContext. Called by a Handler
// with the ctx and tx the applier passed it, it prepares query once per
// apply transaction and reuses the statement for every later event of the
// batch, which saves the SQLite driver's per-call prepare (a large share of
// a small handler's cost during catch-up). With any other ctx or tx it is
// exactly tx.ExecContext. The result, errors and transactional effects are
// those of tx.ExecContext; a failed prepare is returned as is. Like the
// handlers that call it, it must not be used concurrently for one
// transaction.
func Exec(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	if c, ok := ctx.Value(stmtCacheKey{}).(*stmtCache); ok && c.tx == tx {
		s, err := c.prepare(ctx, query)
		if err != nil {
			return nil, err
		}
		return s.ExecContext(ctx, args...)
	}
	return tx.ExecContext(ctx, query, args...)
}
