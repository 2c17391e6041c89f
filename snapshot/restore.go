package snapshot

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"runtime"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/internal/failpoint"
	"github.com/controlfeed/controlfeed/trust"
)

// TempSuffix is appended to the target path to name the temporary file
// Restore writes the new database to. A leftover one (from a crash) is
// never a database anything uses; the next Restore of the same target
// removes it.
const TempSuffix = ".restore"

// copyChunk is the size of the buffer Restore streams the database through.
const copyChunk = 1 << 20

// RestoreOptions configures Restore. The zero value (or nil) refuses to
// replace a populated database and runs PRAGMA quick_check.
type RestoreOptions struct {
	// Force allows replacing a populated target database (see
	// ErrPopulated), including with an older snapshot (see
	// ErrDowngrade). The replacement is logged at Warn level.
	Force bool
	// FullCheck runs PRAGMA integrity_check on the downloaded database
	// instead of the faster quick_check (which skips index consistency).
	FullCheck bool
	// Logger receives one line when a populated database is replaced;
	// nil discards it.
	Logger *slog.Logger
	// Progress, if set, is called from Restore's goroutine with
	// PhaseFetch (bytes downloaded of the manifest's size) and PhaseCheck.
	// It must return quickly.
	Progress ProgressFunc
	// TrustedKeys, if set and not empty, makes Restore refuse, before it
	// fetches the database, a snapshot whose manifest is not signed by one
	// of these keys with a signature that verifies (Manifest.Verify), and,
	// once the database is downloaded and before the target is touched,
	// one whose database's trust chain head is not the manifest's signed
	// Chain. Each refusal is a *SignatureError (ErrUntrusted). A node that
	// verifies its feed's signatures passes the keys it trusts; nil
	// restores signed and unsigned snapshots alike (a signed manifest's
	// chain head is still compared with its database, as ErrCorrupt).
	TrustedKeys *trust.Keyring
}

// Restore replaces (or creates) the database at target with the snapshot m
// describes, fetched from store. It never changes the target in place:
//
//  1. m is checked (Manifest.Check), and with opts.TrustedKeys its
//     signature verified (Manifest.Verify); the target is inspected: a populated
//     one is refused unless opts.Force (ErrPopulated; ErrDowngrade too
//     when the snapshot's cursor is below the target's).
//  2. The database artifact is streamed into target+TempSuffix (a leftover
//     from an earlier crash is removed first), its size and sha256
//     compared with the manifest, and the file fsynced.
//  3. The file is opened read-only and checked: PRAGMA quick_check (or
//     integrity_check), controlfeed's node tables present, and its schema
//     versions, cursor, applied-event count and trust chain head equal
//     to the manifest's. Any difference wraps ErrCorrupt, except a chain
//     head other than the signed one with opts.TrustedKeys, which is a
//     *SignatureError (ErrChainMismatch).
//  4. The old target, if a SQLite database, is inspected again and its
//     WAL checkpointed into the main file (wal_checkpoint(TRUNCATE));
//     if another connection prevents that, or another process holds the
//     database open (the lock every SQLite connection keeps on its -shm
//     file, asked of the kernel), ErrInUse. Its -wal, -shm and
//     -journal files are then removed and the directory fsynced.
//  5. The temporary file is renamed over target and the directory fsynced.
//
// Crash safety: until step 5 the target name holds the old database, and
// from step 4 on that file alone is complete (the checkpoint has copied
// and synced every committed transaction into it before its WAL goes), so
// removing the sidecars loses nothing. They must go before the rename:
// SQLite would replay a leftover WAL, or roll back a leftover journal,
// onto the new file and corrupt it. The rename is atomic, and the
// directory fsync after the removals orders them before it on disk. A
// crash at any point leaves either the complete old database (plus perhaps
// target+TempSuffix) or the complete new one. Retrying Restore after a
// crash or an error is safe; after a crash past step 5 the target is
// already the snapshot, which a retry refuses as populated unless Force.
//
// Concurrency: no process may have target open while Restore runs (stop
// the node first); Restore detects, at step 4, another process with the
// database open and a connection of any process that keeps its WAL busy
// (ErrInUse); an idle connection of this process it cannot see. Restores of different targets may run concurrently.
//
// Memory is bounded: the artifact is streamed through a 1 MiB buffer.
// The restored file is in rollback-journal mode until a node opens it
// (package sqlitedb switches it to WAL); older schema versions are upgraded
// by the node's usual Migrate calls.
func Restore(ctx context.Context, store artifact.Store, m Manifest, target string, opts *RestoreOptions) error {
	var o RestoreOptions
	if opts != nil {
		o = *opts
	}
	if target == "" {
		return errors.New("snapshot: restore: empty target path")
	}
	if err := m.Check(); err != nil {
		return err
	}
	verifying := o.TrustedKeys != nil && o.TrustedKeys.Len() > 0
	signer := ""
	if verifying {
		kid, err := m.Verify(o.TrustedKeys)
		if err != nil {
			return err
		}
		signer = kid
	}
	if _, err := inspectTarget(ctx, target, m, o, false); err != nil {
		return err
	}
	tmp := target + TempSuffix
	if err := removeFiles(tmp, tmp+"-journal", tmp+"-wal", tmp+"-shm"); err != nil {
		return fmt.Errorf("snapshot: restore %s: remove leftover temporary file: %w", target, err)
	}
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmp)
		}
	}()
	if err := download(ctx, store, m, tmp, o.Progress); err != nil {
		return fmt.Errorf("snapshot: restore %s from %s: %w", target, describeRef(m), err)
	}
	if o.Progress != nil {
		o.Progress(PhaseCheck, 0, m.Database.Size)
	}
	head, err := verify(ctx, tmp, m, o.FullCheck)
	if err != nil {
		return fmt.Errorf("snapshot: restore %s from %s: %w", target, describeRef(m), err)
	}
	if want := m.chainHead(); head != want {
		detail := fmt.Sprintf("the database's cursor row holds chain head seq %d digest %s, the manifest says seq %d digest %s", head.Seq, head.Digest, want.Seq, want.Digest)
		if verifying {
			return &SignatureError{Manifest: m.Ref, Reason: ReasonChainMismatch, KeyID: signer, Trusted: o.TrustedKeys.IDs(), Detail: detail}
		}
		if m.Chain != nil {
			return fmt.Errorf("snapshot: restore %s from %s: %s: %w", target, describeRef(m), detail, ErrCorrupt)
		}
	}
	if o.Progress != nil {
		o.Progress(PhaseCheck, m.Database.Size, m.Database.Size)
	}
	st, err := inspectTarget(ctx, target, m, o, true)
	if err != nil {
		return err
	}
	if pid, err := openByOtherProcess(target); err != nil {
		return fmt.Errorf("snapshot: restore %s: %w", target, err)
	} else if pid != 0 {
		return fmt.Errorf("snapshot: restore %s: process %d has the database open: %w; stop it (the node) and retry", target, pid, ErrInUse)
	}
	if err := removeFiles(target+"-wal", target+"-shm", target+"-journal"); err != nil {
		return fmt.Errorf("snapshot: restore %s: remove the old database's WAL files (the old database is complete): %w", target, err)
	}
	dir := filepath.Dir(target)
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("snapshot: restore %s: %w", target, err)
	}
	if err := failpoint.Inject(failpoint.SnapshotRestoreBeforeRename); err != nil {
		return fmt.Errorf("snapshot: restore %s: %w", target, err)
	}
	if st.populated() && o.Logger != nil {
		o.Logger.Warn("snapshot: replacing a populated database (forced)", "target", target,
			"old_cursor", st.cursor, "old_applied_events", st.applied, "snapshot", describeRef(m), "snapshot_cursor", m.ControlVersion)
	}
	if err := os.Rename(tmp, target); err != nil {
		return fmt.Errorf("snapshot: restore %s: rename %s into place: %w", target, tmp, err)
	}
	ok = true
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("snapshot: restore %s: renamed into place, but %w; the restore may not survive a power loss", target, err)
	}
	if err := failpoint.Inject(failpoint.SnapshotRestoreAfterRename); err != nil {
		return fmt.Errorf("snapshot: restore %s: %w", target, err)
	}
	return nil
}

// RestoreRef is Load followed by Restore: it restores the snapshot whose
// manifest is stored under ref and returns that manifest.
func RestoreRef(ctx context.Context, store artifact.Store, ref, target string, opts *RestoreOptions) (Manifest, error) {
	m, err := Load(ctx, store, ref)
	if err != nil {
		return Manifest{}, err
	}
	return m, Restore(ctx, store, m, target, opts)
}

func describeRef(m Manifest) string {
	if m.Ref != "" {
		return "snapshot " + m.Ref
	}
	return "snapshot database " + m.Database.Ref
}

// download streams the database artifact into a new file at path, checks
// its size and checksum against m and fsyncs it.
func download(ctx context.Context, store artifact.Store, m Manifest, path string, progress ProgressFunc) (err error) {
	rc, err := store.Get(ctx, m.Database.Ref)
	if err != nil {
		if errors.Is(err, artifact.ErrCorrupt) {
			return fmt.Errorf("fetch %s: %w: %w", m.Database.Ref, ErrCorrupt, err)
		}
		return fmt.Errorf("fetch %s: %w", m.Database.Ref, err)
	}
	defer rc.Close()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	h := controlevent.NewHash()
	buf := make([]byte, copyChunk)
	r := io.LimitReader(rc, m.Database.Size+1)
	var n int64
	for first := true; ; first = false {
		if err := ctx.Err(); err != nil {
			return err
		}
		k, rerr := io.ReadFull(r, buf)
		if k > 0 {
			h.Write(buf[:k])
			n += int64(k)
			if _, err := f.Write(buf[:k]); err != nil {
				return fmt.Errorf("write %s: %w", path, err)
			}
			if progress != nil {
				progress(PhaseFetch, n, m.Database.Size)
			}
			if first {
				if err := failpoint.Inject(failpoint.SnapshotRestoreMidWrite); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			if errors.Is(rerr, artifact.ErrCorrupt) {
				return fmt.Errorf("fetch %s: %w: %w", m.Database.Ref, ErrCorrupt, rerr)
			}
			return fmt.Errorf("fetch %s: %w", m.Database.Ref, rerr)
		}
	}
	if n != m.Database.Size {
		return fmt.Errorf("database artifact %s is %d bytes, the manifest says %d: %w", m.Database.Ref, n, m.Database.Size, ErrCorrupt)
	}
	if got := controlevent.ChecksumOf(h); got != m.Database.SHA256 {
		return fmt.Errorf("database artifact %s hashes to %s, the manifest says %s: %w", m.Database.Ref, got, m.Database.SHA256, ErrCorrupt)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return nil
}

// verify opens the downloaded database at path read-only and checks it
// against m; it returns the trust chain head of its cursor row, which the
// caller compares with m's.
func verify(ctx context.Context, path string, m Manifest, full bool) (trust.Head, error) {
	db, err := openReadOnly(path)
	if err != nil {
		return trust.Head{}, err
	}
	defer db.Close()
	pragma := "quick_check"
	if full {
		pragma = "integrity_check"
	}
	var res string
	if err := db.QueryRowContext(ctx, "PRAGMA "+pragma).Scan(&res); err != nil {
		return trust.Head{}, fmt.Errorf("check the database (PRAGMA %s): %v: %w", pragma, err, ErrCorrupt)
	}
	if res != "ok" {
		return trust.Head{}, fmt.Errorf("check the database (PRAGMA %s): %s: %w", pragma, res, ErrCorrupt)
	}
	for _, t := range nodeTables {
		ok, err := hasTable(ctx, db, t)
		if err != nil {
			return trust.Head{}, fmt.Errorf("%v: %w", err, ErrCorrupt)
		}
		if !ok {
			return trust.Head{}, fmt.Errorf("the database has no table %s (not a node snapshot): %w", t, ErrCorrupt)
		}
	}
	schemas, err := readSchemas(ctx, db)
	if err != nil {
		return trust.Head{}, fmt.Errorf("%v: %w", err, ErrCorrupt)
	}
	if !maps.Equal(schemas, m.Schemas) {
		return trust.Head{}, fmt.Errorf("the database has schema versions %v, the manifest says %v: %w", schemas, m.Schemas, ErrCorrupt)
	}
	cursor, applied, err := readPosition(ctx, db)
	if err != nil {
		return trust.Head{}, fmt.Errorf("%v: %w", err, ErrCorrupt)
	}
	if cursor != m.ControlVersion || applied != m.AppliedEvents {
		return trust.Head{}, fmt.Errorf("the database's cursor is %d with %d applied events, the manifest says %d with %d: %w",
			cursor, applied, m.ControlVersion, m.AppliedEvents, ErrCorrupt)
	}
	head, err := readChainHead(ctx, db)
	if err != nil {
		return trust.Head{}, fmt.Errorf("%v: %w", err, ErrCorrupt)
	}
	return head, nil
}

// targetKind classifies what is at the target path.
type targetKind int

const (
	targetAbsent     targetKind = iota // no file, or an empty one
	targetEmpty                        // a SQLite database without tables or a node at cursor 0 without applied events
	targetNode                         // a node database with state
	targetForeign                      // a SQLite database with tables but no cursor
	targetUnreadable                   // not a readable SQLite database
)

// targetState is what inspectTarget found.
type targetState struct {
	kind    targetKind
	cursor  uint64
	applied int64
	why     string // for targetForeign: what it holds, "" = tables but no cursor
	err     error  // for targetUnreadable
}

func (s targetState) populated() bool { return s.kind >= targetNode }

// inspectTarget reads the target's state and applies the replace policy.
// With checkpoint set it also checkpoints the target's WAL into its main
// file (TRUNCATE), failing with ErrInUse if another connection prevents
// it; the connection is closed before it returns.
func inspectTarget(ctx context.Context, target string, m Manifest, o RestoreOptions, checkpoint bool) (targetState, error) {
	st := readTarget(ctx, target, checkpoint)
	if st.kind == targetAbsent {
		return st, nil
	}
	if st.kind != targetUnreadable && st.err != nil {
		return st, fmt.Errorf("snapshot: restore %s: %w; stop the node using it and retry", target, st.err)
	}
	if o.Force {
		return st, nil
	}
	switch st.kind {
	case targetUnreadable:
		return st, fmt.Errorf("snapshot: restore %s: the target is not a readable SQLite database (%v): %w; move it away or pass Force to replace it", target, st.err, ErrPopulated)
	case targetForeign:
		why := cmp.Or(st.why, "it holds tables but no controlfeed cursor")
		return st, fmt.Errorf("snapshot: restore %s: the target is not a new node database (%s): %w; move it away or pass Force to replace it", target, why, ErrPopulated)
	case targetNode:
		if m.ControlVersion < st.cursor {
			return st, fmt.Errorf("snapshot: restore %s: the target has cursor %d (%d applied events), the snapshot only %d: %w: %w; pass Force to replace it anyway",
				target, st.cursor, st.applied, m.ControlVersion, ErrPopulated, ErrDowngrade)
		}
		return st, fmt.Errorf("snapshot: restore %s: the target has cursor %d (%d applied events): %w; pass Force to replace it with the snapshot at %d",
			target, st.cursor, st.applied, ErrPopulated, m.ControlVersion)
	}
	return st, nil
}

// readTarget classifies the file at target. With checkpoint set it also
// checkpoints its WAL (st.err wraps ErrInUse when another connection
// prevented that).
func readTarget(ctx context.Context, target string, checkpoint bool) targetState {
	fi, err := os.Stat(target)
	if errors.Is(err, fs.ErrNotExist) {
		return targetState{kind: targetAbsent}
	}
	if err != nil {
		return targetState{kind: targetUnreadable, err: err}
	}
	if fi.Mode().IsRegular() && fi.Size() == 0 {
		return targetState{kind: targetAbsent}
	}
	if !fi.Mode().IsRegular() {
		return targetState{kind: targetUnreadable, err: fmt.Errorf("not a regular file (%v)", fi.Mode().Type())}
	}
	dsn := "file:" + (&url.URL{Path: target}).EscapedPath() + "?mode=rw&_pragma=busy_timeout(10000)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return targetState{kind: targetUnreadable, err: err}
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	st := classify(ctx, db)
	if st.kind == targetUnreadable || !checkpoint {
		return st
	}
	var busy, logPages, moved int
	if err := db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logPages, &moved); err != nil {
		st.err = fmt.Errorf("checkpoint the old database's WAL: %w", err)
		return st
	}
	if busy != 0 {
		st.err = fmt.Errorf("checkpoint the old database's WAL: blocked by another connection: %w", ErrInUse)
	}
	return st
}

func classify(ctx context.Context, db *sql.DB) targetState {
	var tables int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE type = 'table'`).Scan(&tables); err != nil {
		return targetState{kind: targetUnreadable, err: err}
	}
	if tables == 0 {
		return targetState{kind: targetEmpty}
	}
	ok, err := hasTable(ctx, db, "controlfeed_cursor")
	if err != nil {
		return targetState{kind: targetUnreadable, err: err}
	}
	if !ok {
		return targetState{kind: targetForeign}
	}
	cursor, applied := uint64(0), int64(0)
	if has, _ := hasTable(ctx, db, "controlfeed_applied_events"); has {
		cursor, applied, err = readPosition(ctx, db)
	} else {
		err = ctx.Err()
		var cv int64
		if err == nil {
			err = db.QueryRowContext(ctx, `SELECT control_version FROM controlfeed_cursor WHERE id = 1`).Scan(&cv)
			cursor = uint64(cv)
		}
	}
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return targetState{kind: targetUnreadable, err: err}
	}
	if cursor == 0 && applied == 0 {
		if why, err := heldData(ctx, db); err != nil {
			return targetState{kind: targetUnreadable, err: err}
		} else if why != "" {
			return targetState{kind: targetForeign, why: why}
		}
		return targetState{kind: targetEmpty}
	}
	return targetState{kind: targetNode, cursor: cursor, applied: applied}
}

// heldData says what state a database at cursor 0 without applied events
// still holds ("" for none): a producer's role, outbox rows, or key/value
// rows written locally. Such a database is not new, and replacing it
// would lose that state.
func heldData(ctx context.Context, db *sql.DB) (string, error) {
	for _, c := range []struct{ table, query, why string }{
		{"controlfeed_role", `SELECT count(*) FROM controlfeed_role WHERE role = 'producer'`, "it is recorded as a producer's database"},
		{"controlfeed_outbox", `SELECT count(*) FROM controlfeed_outbox`, "it holds outbox rows (a producer's database)"},
		{"controlfeed_kv", `SELECT count(*) FROM controlfeed_kv`, "it holds key/value rows"},
	} {
		ok, err := hasTable(ctx, db, c.table)
		if err != nil || !ok {
			if err != nil {
				return "", err
			}
			continue
		}
		var n int64
		if err := db.QueryRowContext(ctx, c.query).Scan(&n); err != nil {
			return "", fmt.Errorf("count %s: %w", c.table, err)
		}
		if n > 0 {
			return c.why, nil
		}
	}
	return "", nil
}

// removeFiles removes each path that exists.
func removeFiles(paths ...string) error {
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// syncDir fsyncs a directory so that entries created, removed or renamed in
// it survive a power loss. Windows cannot open directories for syncing.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}
