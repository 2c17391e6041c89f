package snapshot

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/controlfeed/controlfeed/controlevent"
)

// TargetState is what Inspect found at a database path: whether Restore
// would replace it without RestoreOptions.Force, and the node position it
// holds.
type TargetState struct {
	// New is true for a path Restore replaces without Force: no file, an
	// empty file, a SQLite database without tables, or a node database
	// at cursor 0 with no applied events that holds no other state (no
	// producer role, outbox or key/value rows).
	New bool
	// Cursor and AppliedEvents are the node's position, for a node
	// database.
	Cursor        uint64
	AppliedEvents int64
	// Reason says, when New is false, what the database holds.
	Reason string
}

// Inspect classifies the database at path as Restore does before
// replacing it. It does not write to the database (it opens it read-write,
// as the node will, so SQLite may create its -wal and -shm files). Stop
// any process using the database first for a stable answer. An error is
// only a failure to inspect (permissions); an unreadable file is reported
// as not New with the reason.
func Inspect(ctx context.Context, path string) (TargetState, error) {
	if err := ctx.Err(); err != nil {
		return TargetState{}, err
	}
	st := readTarget(ctx, path, false)
	out := TargetState{Cursor: st.cursor, AppliedEvents: st.applied}
	switch st.kind {
	case targetAbsent, targetEmpty:
		out.New = true
	case targetNode:
		out.Reason = fmt.Sprintf("a node database at cursor %d with %d applied events", st.cursor, st.applied)
	case targetForeign:
		out.Reason = cmp.Or(st.why, "it holds tables but no controlfeed cursor")
	case targetUnreadable:
		out.Reason = fmt.Sprintf("not a readable SQLite database (%v)", st.err)
	}
	return out, nil
}

// Export writes a snapshot of the node database db to the new file path,
// beside nothing in any store: the file is a complete SQLite database (the
// one Create would store) that a stopped node can use as its database, and
// the returned manifest describes it (its Ref is empty: nothing is
// stored). The copy is written to path+".partial", fsynced and renamed into
// place, so path is either absent or complete; an existing path is
// refused. opts.TempDir is unused; opts.Progress gets PhaseCopy.
func Export(ctx context.Context, db *sql.DB, path string, opts *CreateOptions) (Manifest, error) {
	if err := opts.Validate(); err != nil {
		return Manifest{}, err
	}
	o := opts.withDefaults()
	if _, err := os.Stat(path); err == nil {
		return Manifest{}, fmt.Errorf("snapshot: export to %s: the file exists; remove it or choose another", path)
	}
	for _, t := range nodeTables {
		ok, err := hasTable(ctx, db, t)
		if err != nil {
			return Manifest{}, fmt.Errorf("snapshot: export: %w", err)
		}
		if !ok {
			return Manifest{}, fmt.Errorf("snapshot: export: database has no table %s: %w; run the node (applier.Migrate) on it first", t, ErrNotNode)
		}
	}
	tmp := path + ".partial"
	if err := removeFiles(tmp); err != nil {
		return Manifest{}, fmt.Errorf("snapshot: export to %s: %w", path, err)
	}
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmp)
		}
	}()
	createdAt := o.Now().UTC()
	if err := vacuumInto(ctx, db, tmp, o.Progress); err != nil {
		return Manifest{}, fmt.Errorf("snapshot: export: %w", err)
	}
	m, err := describe(ctx, tmp)
	if err != nil {
		return Manifest{}, fmt.Errorf("snapshot: export: %w", err)
	}
	m.Node, m.CreatedAt = o.Node, createdAt
	if m.Database, err = hashFile(tmp); err != nil {
		return Manifest{}, fmt.Errorf("snapshot: export: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return Manifest{}, fmt.Errorf("snapshot: export: rename into place: %w", err)
	}
	ok = true
	if err := syncDir(filepath.Dir(path)); err != nil {
		return Manifest{}, fmt.Errorf("snapshot: export to %s: %w", path, err)
	}
	return m, nil
}

// hashFile fsyncs the file at path and returns its size and checksum.
func hashFile(path string) (Database, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return Database{}, err
	}
	defer f.Close()
	c := &countingHash{h: controlevent.NewHash()}
	if _, err := io.Copy(c, f); err != nil {
		return Database{}, fmt.Errorf("read %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return Database{}, fmt.Errorf("fsync %s: %w", path, err)
	}
	sum := controlevent.ChecksumOf(c.h)
	return Database{Ref: sum, Size: c.n, SHA256: sum}, nil
}
