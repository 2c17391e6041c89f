package sqlitedb

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"

	"modernc.org/sqlite"
)

// OpenReadOnly opens the existing SQLite database at path for reading only,
// for commands that inspect a database ("status", "kv get") and must leave
// any file, controlfeed's or another program's, as they found it.
//
// Unlike Open it never creates the file (a missing path is an error wrapping
// fs.ErrNotExist), never changes its journal mode (no journal_mode pragma:
// a rollback-journal database stays one), and every connection is opened
// with SQLite's mode=ro and query_only, so no statement can write. It takes
// no in-process write lock. It may read a database another process is
// writing: readers of a WAL database share its -wal and -shm files, which
// SQLite creates next to it if they are missing and the directory is
// writable, as any reader does; the database file itself is not written.
func OpenReadOnly(ctx context.Context, path string) (*sql.DB, error) {
	if path == "" {
		return nil, fmt.Errorf("sqlitedb: open read-only: empty database path (set --db)")
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("sqlitedb: open %s read-only: %w", path, err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("sqlitedb: open %s read-only: not a regular file", path)
	}
	q := url.Values{}
	q.Set("mode", "ro")
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds()))
	q.Add("_pragma", "query_only(1)")
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	c, err := sqlite.NewConnector(dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlitedb: open %s read-only: %w", path, err)
	}
	db := sql.OpenDB(c)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlitedb: open %s read-only: %w", path, err)
	}
	return db, nil
}
