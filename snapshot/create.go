package snapshot

import (
	"context"
	"database/sql"
	"fmt"
	"hash"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/internal/failpoint"
	"github.com/controlfeed/controlfeed/trust"
)

// CreateOptions configures Create. The zero value (or nil) uses the
// defaults documented on each field.
type CreateOptions struct {
	// Node names the source node in the manifest; "" records none.
	Node string
	// TempDir is where Create writes the database copy before storing it;
	// it needs room for a copy of the database. "" means os.TempDir().
	TempDir string
	// Now returns the manifest's CreatedAt; nil means time.Now.
	Now func() time.Time
	// Progress, if set, is called from Create's goroutine or a helper
	// goroutine (never concurrently) as the work advances: phase
	// PhaseCopy (the VACUUM INTO copy; total is the live database's size,
	// an estimate) and PhaseStore (the upload; total exact), with bytes
	// done so far. It must return quickly.
	Progress ProgressFunc
	// SigningKey, if set, signs the manifest: Create stores it as a DSSE
	// envelope (payload type trust.ManifestPayloadType) whose payload is
	// the manifest's JSON, signed by this key, and sets the result's
	// SignedBy. Nodes that verify (RestoreOptions.TrustedKeys) restore only
	// snapshots signed by a key they trust. nil stores the manifest
	// unsigned, as before signing existed.
	SigningKey *trust.PrivateKey
}

// ProgressFunc reports done of total bytes of a phase of Create or
// Restore (PhaseCopy, PhaseStore, PhaseFetch, PhaseCheck).
type ProgressFunc func(phase string, done, total int64)

// Phases reported to a ProgressFunc.
const (
	// PhaseCopy is Create's VACUUM INTO copy of the live database.
	PhaseCopy = "copy"
	// PhaseStore is Create's upload of the copy to the artifact store.
	PhaseStore = "store"
	// PhaseFetch is Restore's download of the database artifact.
	PhaseFetch = "fetch"
	// PhaseCheck is Restore's check of the downloaded database (reported
	// once at its start, done 0, and once at its end, done = total).
	PhaseCheck = "check"
)

// Validate reports whether o is usable; nil is.
func (o *CreateOptions) Validate() error {
	if o == nil || o.TempDir == "" {
		return nil
	}
	if fi, err := os.Stat(o.TempDir); err != nil || !fi.IsDir() {
		return fmt.Errorf("snapshot: create: temp dir %q is not a directory (%v)", o.TempDir, err)
	}
	return nil
}

func (o *CreateOptions) withDefaults() CreateOptions {
	var c CreateOptions
	if o != nil {
		c = *o
	}
	if c.TempDir == "" {
		c.TempDir = os.TempDir()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Create takes a snapshot of the node database db and stores it in store:
// the database file first, then its manifest; it returns the manifest with
// Ref set to the manifest's reference.
//
// The copy is transactionally consistent: SQLite's VACUUM INTO writes,
// inside one read transaction, every table of db (the application's own,
// the cursor, controlfeed_applied_events) into a new file in a temporary
// directory under opts.TempDir. db may keep applying meanwhile: in WAL mode
// the read transaction blocks no writer (it only holds back checkpoints, so
// the WAL grows for the duration of the copy). The manifest's cursor,
// applied-event count and schema versions are read from the copy, so they
// describe exactly the state in it.
//
// Memory is bounded: SQLite copies page by page through its page cache, and
// the file is streamed to store.Put, never read whole.
//
// Crash and retry: Create changes nothing in db. The database artifact is
// stored before the manifest, so a manifest never names a missing
// database; a crash or error between the two leaves an unreferenced
// artifact, harmless. A crash can leave the temporary directory
// ("controlfeed-snapshot-*" under TempDir) behind; an error removes it.
// Retrying is always safe; a snapshot of an unchanged database yields the
// same database artifact. Safe for concurrent use (each call has its own
// copy).
//
// Errors: a database without the applier's tables wraps ErrNotNode; store
// errors are wrapped as they come.
func Create(ctx context.Context, db *sql.DB, store artifact.Store, opts *CreateOptions) (Manifest, error) {
	if err := opts.Validate(); err != nil {
		return Manifest{}, err
	}
	o := opts.withDefaults()
	for _, t := range nodeTables {
		ok, err := hasTable(ctx, db, t)
		if err != nil {
			return Manifest{}, fmt.Errorf("snapshot: create: %w", err)
		}
		if !ok {
			return Manifest{}, fmt.Errorf("snapshot: create: database has no table %s: %w; run the node (applier.Migrate) on it first", t, ErrNotNode)
		}
	}
	dir, err := os.MkdirTemp(o.TempDir, "controlfeed-snapshot-*")
	if err != nil {
		return Manifest{}, fmt.Errorf("snapshot: create: temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "snapshot.db")

	createdAt := o.Now().UTC()
	if err := vacuumInto(ctx, db, path, o.Progress); err != nil {
		return Manifest{}, fmt.Errorf("snapshot: create: %w", err)
	}
	m, err := describe(ctx, path)
	if err != nil {
		return Manifest{}, fmt.Errorf("snapshot: create: %w", err)
	}
	if err := failpoint.Inject(failpoint.SnapshotCreateAfterCopy); err != nil {
		return Manifest{}, fmt.Errorf("snapshot: create: %w", err)
	}
	m.Node, m.CreatedAt = o.Node, createdAt
	if m.Database, err = putFile(ctx, store, path, o.Progress); err != nil {
		return Manifest{}, fmt.Errorf("snapshot: create: store the database copy: %w", err)
	}
	if err := failpoint.Inject(failpoint.SnapshotCreateBeforeManifest); err != nil {
		return Manifest{}, fmt.Errorf("snapshot: create: store the manifest (database %s is stored): %w", m.Database.Ref, err)
	}
	b, err := m.stored(o.SigningKey)
	if err != nil {
		return Manifest{}, err
	}
	if m.Ref, err = artifact.PutBytes(ctx, store, b); err != nil {
		return Manifest{}, fmt.Errorf("snapshot: create: store the manifest (database %s is stored): %w", m.Database.Ref, err)
	}
	return m, nil
}

// describe reads the manifest's database-derived fields from the copy at
// path: schema versions, cursor, applied-event count and chain head.
func describe(ctx context.Context, path string) (Manifest, error) {
	db, err := openReadOnly(path)
	if err != nil {
		return Manifest{}, err
	}
	defer db.Close()
	m := Manifest{Kind: Kind, Format: FormatVersion}
	if m.Schemas, err = readSchemas(ctx, db); err != nil {
		return Manifest{}, fmt.Errorf("copy %s: %w", path, err)
	}
	if m.ControlVersion, m.AppliedEvents, err = readPosition(ctx, db); err != nil {
		return Manifest{}, fmt.Errorf("copy %s: %w", path, err)
	}
	h, err := readChainHead(ctx, db)
	if err != nil {
		return Manifest{}, fmt.Errorf("copy %s: %w", path, err)
	}
	m.Chain = chainOf(h)
	return m, nil
}

// readPosition returns the cursor and the number of applied events of a
// node database.
func readPosition(ctx context.Context, q querier) (cursor uint64, applied int64, err error) {
	var cv int64
	if err := q.QueryRowContext(ctx, `SELECT control_version FROM controlfeed_cursor WHERE id = 1`).Scan(&cv); err != nil {
		return 0, 0, fmt.Errorf("read cursor: %w", err)
	}
	if err := q.QueryRowContext(ctx, `SELECT count(*) FROM controlfeed_applied_events`).Scan(&applied); err != nil {
		return 0, 0, fmt.Errorf("count applied events: %w", err)
	}
	return uint64(cv), applied, nil
}

// openReadOnly opens a database file that nothing else writes (a snapshot
// copy) read-only and immutable: no lock, no journal, nothing written.
func openReadOnly(path string) (*sql.DB, error) {
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?mode=ro&immutable=1"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	return db, nil
}

// putFile streams the file at path to store and returns its reference,
// size and checksum.
func putFile(ctx context.Context, store artifact.Store, path string, progress ProgressFunc) (Database, error) {
	f, err := os.Open(path)
	if err != nil {
		return Database{}, err
	}
	defer f.Close()
	c := &countingHash{h: controlevent.NewHash(), progress: progress}
	if fi, err := f.Stat(); err == nil {
		c.total = fi.Size()
	}
	ref, err := store.Put(ctx, io.TeeReader(f, c))
	if err != nil {
		return Database{}, fmt.Errorf("put %s into %s: %w", path, store.Name(), err)
	}
	sum := controlevent.ChecksumOf(c.h)
	if ref != sum {
		return Database{}, fmt.Errorf("put %s into %s: the store returned reference %s for content hashing to %s", path, store.Name(), ref, sum)
	}
	return Database{Ref: ref, Size: c.n, SHA256: sum}, nil
}

// countingHash is an io.Writer that hashes and counts what it is given.
type countingHash struct {
	h        hash.Hash
	n        int64
	total    int64
	progress ProgressFunc
}

func (c *countingHash) Write(p []byte) (int, error) {
	if c.n == 0 && len(p) > 0 {
		if err := failpoint.Inject(failpoint.SnapshotCreateMidStore); err != nil {
			return 0, err
		}
	}
	c.h.Write(p)
	c.n += int64(len(p))
	if c.progress != nil {
		c.progress(PhaseStore, c.n, c.total)
	}
	return len(p), nil
}

// vacuumInto copies db into a new file at path with VACUUM INTO, reporting
// the growing file's size against the live database's as PhaseCopy.
func vacuumInto(ctx context.Context, db *sql.DB, path string, progress ProgressFunc) error {
	var stop func()
	if progress != nil {
		var total int64
		db.QueryRowContext(ctx, `SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()`).Scan(&total)
		done := make(chan struct{})
		finished := make(chan struct{})
		go func() {
			defer close(finished)
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					if fi, err := os.Stat(path); err == nil {
						progress(PhaseCopy, fi.Size(), max(total, fi.Size()))
					}
				}
			}
		}()
		stop = func() { close(done); <-finished }
	}
	_, err := db.ExecContext(ctx, `VACUUM INTO ?`, path)
	if stop != nil {
		stop()
	}
	if err != nil {
		return fmt.Errorf("copy the database (VACUUM INTO %s): %w", path, err)
	}
	if progress != nil {
		if fi, err := os.Stat(path); err == nil {
			progress(PhaseCopy, fi.Size(), fi.Size())
		}
	}
	return nil
}
