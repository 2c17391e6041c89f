package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ArtifactStoreTable is the table the pump's artifact store is recorded in.
const ArtifactStoreTable = "controlfeed_outbox_artifact_store"

// ArtifactStore names an artifact store: its registered backend name
// (artifact.Open's name, such as "file" or "jetstream") and its location
// (artifact.Locate's answer for the backend's configuration, such as the
// file store's absolute directory or the jetstream store's bucket). Two
// values are the same store exactly when they are equal.
type ArtifactStore struct {
	Backend  string
	Location string
}

// String describes the store for messages: the backend and the quoted
// location, as in `the file store "/var/lib/cf/artifacts"`.
func (s ArtifactStore) String() string {
	return fmt.Sprintf("the %s store %q", s.Backend, s.Location)
}

// validate refuses an empty backend or location.
func (s ArtifactStore) validate() error {
	if s.Backend == "" || s.Location == "" {
		return fmt.Errorf("artifact store %+v: backend and location must both be set", s)
	}
	return nil
}

// ErrArtifactStoreMismatch is wrapped by the *ArtifactStoreMismatchError of
// CheckArtifactStore and RecordArtifactStore.
var ErrArtifactStoreMismatch = errors.New("not the artifact store this producer database's pump publishes references into")

// ArtifactStoreMismatchError is the refusal of CheckArtifactStore and
// RecordArtifactStore: the database records Recorded as its pump's store
// (since RecordedAt, UTC), and the caller uses Given. It wraps
// ErrArtifactStoreMismatch.
type ArtifactStoreMismatchError struct {
	Recorded, Given ArtifactStore
	RecordedAt      time.Time
}

// Error names both stores and the ways out.
func (e *ArtifactStoreMismatchError) Error() string {
	return fmt.Sprintf("outbox: this producer database's pump publishes artifact references into %s (recorded %s), not into %s: "+
		"an event whose payload is in another store halts every node (artifact not found); use the recorded store, "+
		"or, to move the producer to another store on purpose, copy the artifacts the feed references into it and delete the record "+
		"(DELETE FROM %s) while nothing uses the database: %v",
		e.Recorded, e.RecordedAt.Format(time.RFC3339), e.Given, ArtifactStoreTable, ErrArtifactStoreMismatch)
}

// Unwrap returns ErrArtifactStoreMismatch.
func (e *ArtifactStoreMismatchError) Unwrap() error { return ErrArtifactStoreMismatch }

// ReadArtifactStore returns the artifact store recorded in db and when it
// was recorded; ok is false when none is (no pump has started on db since
// the record existed, or db has no controlfeed tables at all). It only
// reads, and never creates the table.
func ReadArtifactStore(ctx context.Context, db *sql.DB) (s ArtifactStore, recordedAt time.Time, ok bool, err error) {
	if db == nil {
		return ArtifactStore{}, time.Time{}, false, errors.New("outbox: read the artifact store: nil *sql.DB")
	}
	return readArtifactStore(ctx, dialectOf(db), db)
}

// queryer is a *sql.DB or a *sql.Tx.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func readArtifactStore(ctx context.Context, dia *dialect, q queryer) (s ArtifactStore, recordedAt time.Time, ok bool, err error) {
	var n int
	if err := q.QueryRowContext(ctx, dia.storeTableExists).Scan(&n); err != nil {
		return s, recordedAt, false, fmt.Errorf("outbox: read the artifact store: %w", err)
	}
	if n == 0 {
		return s, recordedAt, false, nil
	}
	var at string
	err = q.QueryRowContext(ctx, dia.selectStore).Scan(&s.Backend, &s.Location, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return ArtifactStore{}, recordedAt, false, nil
	}
	if err != nil {
		return ArtifactStore{}, recordedAt, false, fmt.Errorf("outbox: read the artifact store: %w", err)
	}
	recordedAt, _ = time.Parse(sqliteTimeLayout, at) // a hand-edited time reads as zero; the store is what counts
	return s, recordedAt, true, nil
}

// CheckArtifactStore returns nil if db records no artifact store or records
// s, and otherwise an *ArtifactStoreMismatchError naming both. A writer
// calls it before it stores an artifact that an event it appends will
// reference (kv put does). It only reads.
func CheckArtifactStore(ctx context.Context, db *sql.DB, s ArtifactStore) error {
	if err := s.validate(); err != nil {
		return fmt.Errorf("outbox: check the artifact store: %w", err)
	}
	rec, at, ok, err := ReadArtifactStore(ctx, db)
	if err != nil || !ok || rec == s {
		return err
	}
	return &ArtifactStoreMismatchError{Recorded: rec, Given: s, RecordedAt: at}
}

// RecordArtifactStore records s as the store db's pump publishes references
// into, creating the table if needed, when none is recorded, and returns nil
// if s is recorded now (by this call or before). If another store is
// recorded it changes nothing and returns an *ArtifactStoreMismatchError. A
// producer calls it before its pump starts. It runs in one transaction: of
// two processes racing to record different stores, one wins and the other
// gets the mismatch; a crash records nothing.
func RecordArtifactStore(ctx context.Context, db *sql.DB, s ArtifactStore) (err error) {
	if db == nil {
		return errors.New("outbox: record the artifact store: nil *sql.DB")
	}
	if err := s.validate(); err != nil {
		return fmt.Errorf("outbox: record the artifact store: %w", err)
	}
	dia := dialectOf(db)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("outbox: record %s: begin: %w", s, err)
	}
	defer tx.Rollback()
	if dia.lockStoreTable != "" {
		if _, err := tx.ExecContext(ctx, dia.lockStoreTable); err != nil {
			return fmt.Errorf("outbox: record %s: lock: %w", s, err)
		}
	}
	if _, err := tx.ExecContext(ctx, dia.createStoreTable); err != nil {
		return fmt.Errorf("outbox: record %s: create %s: %w", s, ArtifactStoreTable, err)
	}
	if _, err := tx.ExecContext(ctx, dia.insertStore, s.Backend, s.Location, time.Now().UTC().Format(sqliteTimeLayout)); err != nil {
		return fmt.Errorf("outbox: record %s: %w", s, err)
	}
	rec, at, ok, err := readArtifactStore(ctx, dia, tx)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("outbox: record %s: the record is missing right after its insert", s)
	}
	if rec != s {
		return &ArtifactStoreMismatchError{Recorded: rec, Given: s, RecordedAt: at}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("outbox: record %s: commit: %w", s, err)
	}
	return nil
}
