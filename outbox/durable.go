package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"

	"github.com/controlfeed/controlfeed/internal/failpoint"
)

// durability makes the rows a pass read durable before the pass publishes
// them: no event leaves the producer before the transaction that created it
// would survive a power loss.
//
// Why it is needed: producer databases run WAL with synchronous=NORMAL
// (package sqlitedb), so a commit writes its frames to the -wal file without
// an fsync; they reach the disk at a later checkpoint. Publishing such a row
// and then losing power would roll the producer back below an event the
// fleet has applied, for good. Instead of paying an fsync in every
// producer commit (synchronous=FULL), the pump fsyncs the WAL file once per
// chunk of rows it read, after the read and before the first publish of the
// chunk. fsync(2) flushes the file's data whichever process wrote it, so it
// covers every transaction committed before the read, including those of
// other processes (a CLI's kv put). If the WAL file does not exist the
// database was checkpointed and its WAL removed, and a checkpoint syncs the
// database file; the pump then fsyncs the database file, which is cheap when
// nothing is dirty. An in-memory or temporary database has nothing to make
// durable.
//
// The measured cost of both options is in docs/RELIABILITY.md.
type durability struct {
	mu    sync.Mutex
	known bool   // path was found
	path  string // the main database file; "" when it has none
}

// syncFile is the fsync step; tests replace it to observe the ordering of
// syncs and publishes (export_test.go).
var syncFile = func(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	serr := f.Sync()
	cerr := f.Close()
	return errors.Join(serr, cerr)
}

// sync makes every transaction committed on db before the call durable.
func (d *durability) sync(ctx context.Context, db *sql.DB, dia *dialect) error {
	if !dia.syncFiles {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.known {
		// Looked up once it succeeds; a failure (a canceled context, a
		// busy database) is retried at the next pass.
		path, err := mainFile(ctx, db)
		if err != nil {
			return err
		}
		d.path, d.known = path, true
	}
	if d.path == "" {
		return nil
	}
	err := syncFile(d.path + "-wal")
	if errors.Is(err, fs.ErrNotExist) {
		err = syncFile(d.path)
	}
	if err != nil {
		return fmt.Errorf("outbox: pass: make the outbox durable before publishing (fsync %s-wal): %w; nothing was published", d.path, err)
	}
	if path, ok := failpoint.ImagePath(failpoint.OutboxAfterSync); ok {
		if err := writeImage(ctx, db, path); err != nil {
			return fmt.Errorf("outbox: pass: failure point %s: %w; nothing was published", failpoint.OutboxAfterSync, err)
		}
	}
	return nil
}

// writeImage writes a copy of db to path (VACUUM INTO a temporary file,
// renamed over path), for the outbox.after-sync failure point: taken after
// the fsync and before any publish of the pass, it holds every row the pump
// has published or will publish in this pass, so restoring it under a
// killed producer is a power loss that the durability step must survive.
func writeImage(ctx context.Context, db *sql.DB, path string) error {
	tmp := path + ".tmp"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("image %s: %w", path, err)
	}
	if _, err := db.ExecContext(ctx, "VACUUM INTO ?", tmp); err != nil {
		return fmt.Errorf("image %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("image %s: %w", path, err)
	}
	return nil
}

// mainFile returns the path of db's main database file, or "" for an
// in-memory or temporary database.
func mainFile(ctx context.Context, db *sql.DB) (string, error) {
	rows, err := db.QueryContext(ctx, "PRAGMA database_list")
	if err != nil {
		return "", fmt.Errorf("outbox: find the database file to fsync: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			seq        int
			name, file string
		)
		if err := rows.Scan(&seq, &name, &file); err != nil {
			return "", fmt.Errorf("outbox: find the database file to fsync: %w", err)
		}
		if name == "main" {
			return file, rows.Err()
		}
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("outbox: find the database file to fsync: %w", err)
	}
	return "", nil
}
