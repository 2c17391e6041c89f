package applier

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Checkpoints of the state digest, so nodes at different cursors can be
// compared at a common recent position: the digest is recorded after the
// first event of every block of DigestCheckpointEvery control versions
// (the event whose ControlVersion / DigestCheckpointEvery differs from the
// previous recorded event's), and the newest DigestCheckpointsKept are kept.
// Every node uses the same constants, so nodes that applied the same events
// hold checkpoints at the same positions.
const (
	DigestCheckpointEvery = 100
	DigestCheckpointsKept = 16
)

// stateDigestDomain separates the state digest from other SHA-256 uses.
const stateDigestDomain = "controlfeed-state-v1"

// ZeroStateDigest is the state digest of a node that has applied nothing.
var ZeroStateDigest = formatStateDigest([32]byte{})

// The state digest is a running digest of what a node applied, in order,
// independent of the application: two nodes at the same cursor that applied
// and skipped the same events have equal digests, and a node that skipped
// what another applied (or applied a different event at a position) does
// not. It covers exactly the rows of controlfeed_applied_events at or below
// the cursor, in ControlVersion order, so it is derivable from the database
// alone (Migrate computes it for databases created before it existed).
// Redelivered duplicates change nothing and do not enter it.
//
// Encoding (version 1), with d_0 = 32 zero bytes, u64/u32 big-endian, and
// str(s) = u32(len(s)) || s:
//
//	d_n = SHA-256("controlfeed-state-v1" || d_{n-1} || u64(control_version) ||
//	      str(event_id) || str(type) || str(outcome) || str(event_digest))
//
// where outcome is "applied" or "skipped" and event_digest is the row's
// digest column (EventDigest of the event; "" for a skipped event and for
// rows recorded before schema version 2). It is shown as "sha256:<hex>".
//
// A StateDigest is the state digest as of a position: Digest covers every
// event applied or skipped at a ControlVersion up to Cursor.
type StateDigest struct {
	Cursor uint64
	Digest string // "sha256:<hex>"
}

// AppDigestFunc returns an application's own digest of its state (for kv,
// kv.TableDigest), read in tx. It is the application's hook beside the
// state digest: the state digest proves which events a node applied, the
// application's digest that its tables hold what those events made of them
// (it catches local edits too). It must be deterministic and may be slow
// (a full table scan); callers cache it.
type AppDigestFunc func(ctx context.Context, tx *sql.Tx) (string, error)

// DigestStep is one event entering the state digest: the values of its
// controlfeed_applied_events row.
type DigestStep struct {
	ControlVersion uint64
	EventID        string
	Type           string
	Outcome        string // "applied" or "skipped"
	EventDigest    string // the row's digest column
}

// NextStateDigest returns the state digest after step, given the digest
// before it ("" = ZeroStateDigest). It is the encoding above, for tools and
// tests that recompute a node's digest from its rows.
func NextStateDigest(prev string, step DigestStep) (string, error) {
	d, err := parseStateDigest(prev)
	if err != nil {
		return "", err
	}
	return formatStateDigest(nextDigest(d, step)), nil
}

func nextDigest(prev [32]byte, s DigestStep) [32]byte {
	var buf [256]byte
	b := append(buf[:0], stateDigestDomain...)
	b = append(b, prev[:]...)
	b = binary.BigEndian.AppendUint64(b, s.ControlVersion)
	for _, f := range [...]string{s.EventID, s.Type, s.Outcome, s.EventDigest} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return sha256.Sum256(b)
}

func formatStateDigest(d [32]byte) string { return "sha256:" + hex.EncodeToString(d[:]) }

func parseStateDigest(s string) ([32]byte, error) {
	var d [32]byte
	if s == "" {
		return d, nil
	}
	h, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(h) != 2*len(d) {
		return d, fmt.Errorf("applier: state digest %q is not sha256:<64 hex digits>", s)
	}
	if _, err := hex.Decode(d[:], []byte(h)); err != nil {
		return d, fmt.Errorf("applier: state digest %q: %w", s, err)
	}
	return d, nil
}

// chain is the state digest while a transaction extends it.
type chain struct {
	d      [32]byte
	lastCV uint64 // ControlVersion of the last event in the digest
	marks  []StateDigest
}

// add extends the chain by one event and notes a checkpoint when the event
// opens a new block of DigestCheckpointEvery positions.
func (c *chain) add(s DigestStep) {
	c.d = nextDigest(c.d, s)
	if c.lastCV == 0 || s.ControlVersion/DigestCheckpointEvery != c.lastCV/DigestCheckpointEvery {
		c.marks = append(c.marks, StateDigest{Cursor: s.ControlVersion, Digest: formatStateDigest(c.d)})
	}
	c.lastCV = s.ControlVersion
}

// readChain reads the stored digest and its last event's position in tx.
func readChain(ctx context.Context, q Querier) (chain, error) {
	var c chain
	var s string
	var cv int64
	if err := q.QueryRowContext(ctx, `SELECT state_digest, state_digest_cv FROM controlfeed_cursor WHERE id = 1`).Scan(&s, &cv); err != nil {
		return c, fmt.Errorf("applier: read state digest: %w (has Migrate run?)", err)
	}
	d, err := parseStateDigest(s)
	if err != nil {
		return c, err
	}
	c.d, c.lastCV = d, uint64(cv)
	return c, nil
}

// execer is what writing the chain needs: *sql.Tx.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// writeChain stores c's digest in the cursor row and its checkpoints (the
// migration's backfill; the apply transaction writes the digest with the
// cursor itself).
func writeChain(ctx context.Context, tx execer, c *chain, now string) error {
	if _, err := tx.ExecContext(ctx, `UPDATE controlfeed_cursor SET state_digest = ?, state_digest_cv = ? WHERE id = 1`,
		formatStateDigest(c.d), int64(c.lastCV)); err != nil {
		return fmt.Errorf("applier: store state digest: %w", err)
	}
	return writeCheckpoints(ctx, tx, c.marks, now)
}

// writeCheckpoints records marks and keeps the newest
// DigestCheckpointsKept checkpoints.
func writeCheckpoints(ctx context.Context, tx execer, marks []StateDigest, now string) error {
	if len(marks) == 0 {
		return nil
	}
	for _, m := range marks {
		if _, err := tx.ExecContext(ctx, `INSERT INTO controlfeed_digest_checkpoints (control_version, state_digest, recorded_at)
			VALUES (?, ?, ?) ON CONFLICT (control_version) DO UPDATE SET state_digest = excluded.state_digest, recorded_at = excluded.recorded_at`,
			int64(m.Cursor), m.Digest, now); err != nil {
			return fmt.Errorf("applier: store state digest checkpoint at %d: %w", m.Cursor, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM controlfeed_digest_checkpoints WHERE control_version NOT IN
		(SELECT control_version FROM controlfeed_digest_checkpoints ORDER BY control_version DESC LIMIT ?)`, DigestCheckpointsKept); err != nil {
		return fmt.Errorf("applier: prune state digest checkpoints: %w", err)
	}
	return nil
}

// stepOf is the digest step of a committed item, or false when it leaves
// the digest unchanged (a redelivered duplicate). A skipped item enters
// with the row Skip recorded at its position; a conflicting copy skipped
// by an operator has no row of its own and changes nothing.
func stepOf(ctx context.Context, tx *sql.Tx, it *item) (DigestStep, bool, error) {
	ev := it.ev
	if !it.dup {
		return DigestStep{ControlVersion: ev.ControlVersion, EventID: ev.EventID, Type: ev.Type, Outcome: outcomeApplied, EventDigest: it.digest()}, true, nil
	}
	if it.outcome != outcomeSkipped {
		return DigestStep{}, false, nil
	}
	s := DigestStep{ControlVersion: ev.ControlVersion, EventID: ev.EventID}
	err := tx.QueryRowContext(ctx, `SELECT type, outcome, digest FROM controlfeed_applied_events WHERE event_id = ? AND control_version = ?`,
		ev.EventID, int64(ev.ControlVersion)).Scan(&s.Type, &s.Outcome, &s.EventDigest)
	if errors.Is(err, sql.ErrNoRows) {
		return DigestStep{}, false, nil
	}
	if err != nil {
		return DigestStep{}, false, fmt.Errorf("applier: read skipped event %q for the state digest: %w", ev.EventID, err)
	}
	return s, true, nil
}

// backfillStateDigest computes the state digest and its checkpoints from
// the rows of controlfeed_applied_events at or below the cursor: the
// schema-3 migration of a database that predates the digest.
func backfillStateDigest(ctx context.Context, tx *sql.Tx) error {
	cursor, err := ReadCursor(ctx, tx)
	if err != nil {
		return err
	}
	rows, err := tx.QueryContext(ctx, `SELECT control_version, event_id, type, outcome, digest FROM controlfeed_applied_events
		WHERE control_version <= ? ORDER BY control_version, event_id`, int64(cursor))
	if err != nil {
		return fmt.Errorf("applier: compute state digest: %w", err)
	}
	defer rows.Close()
	var c chain
	for rows.Next() {
		var s DigestStep
		var cv int64
		if err := rows.Scan(&cv, &s.EventID, &s.Type, &s.Outcome, &s.EventDigest); err != nil {
			return fmt.Errorf("applier: compute state digest: %w", err)
		}
		s.ControlVersion = uint64(cv)
		c.add(s)
		if len(c.marks) > DigestCheckpointsKept {
			c.marks = c.marks[1:]
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("applier: compute state digest: %w", err)
	}
	rows.Close()
	return writeChain(ctx, tx, &c, formatTime(time.Now()))
}

// ReadStateDigest returns the node's state digest and the cursor it is at,
// read together (q may be a *sql.Tx to read it with other state).
func ReadStateDigest(ctx context.Context, q Querier) (StateDigest, error) {
	var cv int64
	var s string
	if err := q.QueryRowContext(ctx, `SELECT control_version, state_digest FROM controlfeed_cursor WHERE id = 1`).Scan(&cv, &s); err != nil {
		return StateDigest{}, fmt.Errorf("applier: read state digest: %w (has Migrate run?)", err)
	}
	if s == "" {
		s = ZeroStateDigest
	}
	return StateDigest{Cursor: uint64(cv), Digest: s}, nil
}

// RowQuerier is what ReadDigestCheckpoints needs: *sql.DB, *sql.Tx and
// *sql.Conn satisfy it.
type RowQuerier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// ReadDigestCheckpoints returns the kept state digest checkpoints, newest
// first (at most DigestCheckpointsKept).
func ReadDigestCheckpoints(ctx context.Context, q RowQuerier) ([]StateDigest, error) {
	rows, err := q.QueryContext(ctx, `SELECT control_version, state_digest FROM controlfeed_digest_checkpoints ORDER BY control_version DESC`)
	if err != nil {
		return nil, fmt.Errorf("applier: read state digest checkpoints: %w (has Migrate run?)", err)
	}
	defer rows.Close()
	var out []StateDigest
	for rows.Next() {
		var cv int64
		var d StateDigest
		if err := rows.Scan(&cv, &d.Digest); err != nil {
			return nil, fmt.Errorf("applier: read state digest checkpoints: %w", err)
		}
		d.Cursor = uint64(cv)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("applier: read state digest checkpoints: %w", err)
	}
	return out, nil
}

// ReadAppDigest runs app in one read-only transaction of db and returns
// its digest together with the cursor it was taken at.
func ReadAppDigest(ctx context.Context, db *sql.DB, app AppDigestFunc) (StateDigest, error) {
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return StateDigest{}, fmt.Errorf("applier: read application digest: begin: %w", err)
	}
	defer tx.Rollback()
	cursor, err := ReadCursor(ctx, tx)
	if err != nil {
		return StateDigest{}, err
	}
	d, err := app(ctx, tx)
	if err != nil {
		return StateDigest{}, fmt.Errorf("applier: read application digest at cursor %d: %w", cursor, err)
	}
	return StateDigest{Cursor: cursor, Digest: d}, nil
}

// advanceCursor moves the cursor to last in tx and the state digest by
// steps, in one statement, and returns the new digest. It starts from the
// digest this applier last committed when it knows it, on the condition
// that the stored one is still that (one statement, no read); if another
// writer changed it, or none is known, it reads the stored digest first.
// The caller sets a.chain once tx commits.
func (a *Applier) advanceCursor(ctx context.Context, tx *sql.Tx, last int64, now string, steps []DigestStep) (chain, error) {
	const update = `UPDATE controlfeed_cursor SET control_version = ?, updated_at = ?, state_digest = ?, state_digest_cv = ? WHERE id = 1`
	if prev := a.chain; prev != nil {
		a.chain = nil // until this transaction commits
		c := chain{d: prev.d, lastCV: prev.lastCV}
		for _, st := range steps {
			c.add(st)
		}
		res, err := tx.ExecContext(ctx, update+` AND state_digest = ? AND state_digest_cv = ?`,
			last, now, formatStateDigest(c.d), int64(c.lastCV), formatStateDigest(prev.d), int64(prev.lastCV))
		if err != nil {
			return chain{}, fmt.Errorf("applier: advance cursor to %d: %w", last, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return chain{}, fmt.Errorf("applier: advance cursor to %d: %w", last, err)
		} else if n == 1 {
			return c, nil
		}
	}
	c, err := readChain(ctx, tx)
	if err != nil {
		return chain{}, err
	}
	for _, st := range steps {
		c.add(st)
	}
	if _, err := tx.ExecContext(ctx, update, last, now, formatStateDigest(c.d), int64(c.lastCV)); err != nil {
		return chain{}, fmt.Errorf("applier: advance cursor to %d: %w", last, err)
	}
	return c, nil
}
