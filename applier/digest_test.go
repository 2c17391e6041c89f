package applier_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/controlevent"
)

// drain steps a until it applies nothing more or fails.
func drain(t *testing.T, a *applier.Applier) error {
	t.Helper()
	for {
		n, err := a.Step(context.Background())
		if err != nil || n == 0 {
			return err
		}
	}
}

func stateDigest(t *testing.T, db *sql.DB) applier.StateDigest {
	t.Helper()
	d, err := applier.ReadStateDigest(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// recompute derives the state digest from controlfeed_applied_events with
// NextStateDigest: the documented encoding, independently of the applier.
func recompute(t *testing.T, db *sql.DB) string {
	t.Helper()
	rows, err := db.Query(`SELECT control_version, event_id, type, outcome, digest FROM controlfeed_applied_events
		WHERE control_version <= (SELECT control_version FROM controlfeed_cursor) ORDER BY control_version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	d := ""
	for rows.Next() {
		var s applier.DigestStep
		if err := rows.Scan(&s.ControlVersion, &s.EventID, &s.Type, &s.Outcome, &s.EventDigest); err != nil {
			t.Fatal(err)
		}
		if d, err = applier.NextStateDigest(d, s); err != nil {
			t.Fatal(err)
		}
	}
	if d == "" {
		return applier.ZeroStateDigest
	}
	return d
}

// The encoding is fixed: a golden vector.
func TestNextStateDigest_Golden(t *testing.T) {
	d, err := applier.NextStateDigest("", applier.DigestStep{ControlVersion: 1, EventID: "evt-1", Type: "kv.put", Outcome: "applied",
		EventDigest: "sha256:0000000000000000000000000000000000000000000000000000000000000000"})
	if err != nil {
		t.Fatal(err)
	}
	const want = "sha256:a3983a4acafb72159342c0e452bcd47cd16a38285fd33b120a7de680f4b6ef13" // checked with a separate implementation of the encoding
	if d != want {
		t.Errorf("NextStateDigest = %s, want %s", d, want)
	}
	if _, err := applier.NextStateDigest("md5:00", applier.DigestStep{}); err == nil {
		t.Error("NextStateDigest accepted a malformed previous digest")
	}
	if applier.ZeroStateDigest != "sha256:0000000000000000000000000000000000000000000000000000000000000000" {
		t.Errorf("ZeroStateDigest = %s", applier.ZeroStateDigest)
	}
}

// Two nodes that applied the same events, one in catch-up batches and one
// event per transaction, have equal digests at the same cursor, equal to
// the digest recomputed from their rows; a redelivered duplicate changes
// nothing.
func TestStateDigest_EqualOnEqualHistory(t *testing.T) {
	all := evs(1, 250, typ)
	dbA, _ := openDB(t)
	if err := drain(t, newApplier(t, dbA, &FakeSource{Events: all}, nil, newInsertHandler(), nil)); err != nil {
		t.Fatal(err)
	}
	dbB, _ := openDB(t)
	if err := drain(t, newApplier(t, dbB, &FakeSource{Events: all}, nil, newInsertHandler(), func(c *applier.Config) { c.MaxBatch = 1 })); err != nil {
		t.Fatal(err)
	}
	a, b := stateDigest(t, dbA), stateDigest(t, dbB)
	if a.Cursor != 250 || a != b {
		t.Fatalf("digests differ: batch %+v, one by one %+v", a, b)
	}
	if a.Digest == applier.ZeroStateDigest || recompute(t, dbA) != a.Digest {
		t.Errorf("stored %s, recomputed from the rows %s", a.Digest, recompute(t, dbA))
	}
	// Checkpoints at the first event of each block of 100: 1, 100, 200.
	ca, err := applier.ReadDigestCheckpoints(context.Background(), dbA)
	if err != nil {
		t.Fatal(err)
	}
	cb, _ := applier.ReadDigestCheckpoints(context.Background(), dbB)
	if len(ca) != 3 || ca[0].Cursor != 200 || ca[1].Cursor != 100 || ca[2].Cursor != 1 || !equalMarks(ca, cb) {
		t.Fatalf("checkpoints %+v and %+v", ca, cb)
	}
	// A node that stopped at 200 has the digest of the others' checkpoint.
	dbC, _ := openDB(t)
	if err := drain(t, newApplier(t, dbC, &FakeSource{Events: all[:200]}, nil, newInsertHandler(), nil)); err != nil {
		t.Fatal(err)
	}
	if c := stateDigest(t, dbC); c != ca[0] {
		t.Errorf("node at 200: %+v, checkpoint %+v", c, ca[0])
	}
	// A duplicate of event 5 redelivered at 251 moves the cursor only.
	dup := ev(251, typ)
	dup.EventID, dup.Key = "evt-5", "k5"
	if err := drain(t, newApplier(t, dbA, &FakeSource{Events: append(all, dup)}, nil, newInsertHandler(), nil)); err != nil {
		t.Fatal(err)
	}
	if got := stateDigest(t, dbA); got.Cursor != 251 || got.Digest != a.Digest {
		t.Errorf("after a duplicate: %+v, want digest %s", got, a.Digest)
	}
}

func equalMarks(a, b []applier.StateDigest) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A node that skipped an event the others applied reaches the same cursor
// with a different digest, and keeps differing after it.
func TestStateDigest_SkipDiffers(t *testing.T) {
	ctx := context.Background()
	all := evs(1, 5, typ)
	dbA, _ := openDB(t)
	if err := drain(t, newApplier(t, dbA, &FakeSource{Events: all}, nil, newInsertHandler(), nil)); err != nil {
		t.Fatal(err)
	}
	dbB, _ := openDB(t)
	h := newInsertHandler()
	h.FailFunc = func(e controlevent.Event) error {
		if e.ControlVersion == 3 {
			return errors.New("refused here")
		}
		return nil
	}
	b := newApplier(t, dbB, &FakeSource{Events: all}, nil, h, nil)
	if err := drain(t, b); !errors.Is(err, applier.ErrHalted) {
		t.Fatalf("want a halt at 3, got %v", err)
	}
	if d := stateDigest(t, dbB); d.Cursor != 2 {
		t.Fatalf("halted node at %+v", d)
	}
	if err := applier.Skip(ctx, dbB, "evt-3"); err != nil {
		t.Fatal(err)
	}
	if err := drain(t, b); err != nil {
		t.Fatal(err)
	}
	da, db := stateDigest(t, dbA), stateDigest(t, dbB)
	if da.Cursor != 5 || db.Cursor != 5 || da.Digest == db.Digest {
		t.Fatalf("applied %+v, skipped %+v: want the same cursor, different digests", da, db)
	}
	if recompute(t, dbB) != db.Digest {
		t.Errorf("skipping node: stored %s, recomputed %s", db.Digest, recompute(t, dbB))
	}
}

// Migrating a database from before the state digest computes it from the
// rows already applied: the same digest and checkpoints as a node that
// applied with it.
func TestMigrate_BackfillsStateDigest(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	if err := drain(t, newApplier(t, db, &FakeSource{Events: evs(1, 1800, typ)}, nil, newInsertHandler(), nil)); err != nil {
		t.Fatal(err)
	}
	want := stateDigest(t, db)
	wantMarks, _ := applier.ReadDigestCheckpoints(ctx, db)
	if len(wantMarks) != applier.DigestCheckpointsKept || wantMarks[0].Cursor != 1800 {
		t.Fatalf("checkpoints %+v", wantMarks)
	}
	for _, q := range []string{
		`ALTER TABLE controlfeed_cursor DROP COLUMN trust_seq`, // schema 4
		`ALTER TABLE controlfeed_cursor DROP COLUMN trust_digest`,
		`ALTER TABLE controlfeed_halt DROP COLUMN security`,
		`DROP TABLE controlfeed_trust_keys`,
		`ALTER TABLE controlfeed_cursor DROP COLUMN state_digest`,
		`ALTER TABLE controlfeed_cursor DROP COLUMN state_digest_cv`,
		`DROP TABLE controlfeed_digest_checkpoints`,
		`UPDATE controlfeed_applier_schema SET version = 2`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(q, err)
		}
	}
	if err := applier.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if got := stateDigest(t, db); got != want {
		t.Errorf("after migration %+v, want %+v", got, want)
	}
	if got, _ := applier.ReadDigestCheckpoints(ctx, db); !equalMarks(got, wantMarks) {
		t.Errorf("checkpoints after migration %+v, want %+v", got, wantMarks)
	}
	// And it keeps extending from there like the others.
	if err := drain(t, newApplier(t, db, &FakeSource{Events: evs(1, 1801, typ)}, nil, newInsertHandler(), nil)); err != nil {
		t.Fatal(err)
	}
	if got := stateDigest(t, db); got.Cursor != 1801 || got.Digest != recompute(t, db) {
		t.Errorf("after one more event %+v, recomputed %s", got, recompute(t, db))
	}
}

// The applier chains from the digest it last committed without reading it,
// but only while the stored one is still that: a digest changed by another
// writer in between is read and chained from.
func TestStateDigest_ChangedUnderneath(t *testing.T) {
	db, _ := openDB(t)
	src := &FakeSource{Events: evs(1, 3, typ)}
	a := newApplier(t, db, src, nil, newInsertHandler(), nil)
	if err := drain(t, a); err != nil {
		t.Fatal(err)
	}
	other, err := applier.NextStateDigest("", applier.DigestStep{ControlVersion: 3, EventID: "elsewhere"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE controlfeed_cursor SET state_digest = ?`, other); err != nil {
		t.Fatal(err)
	}
	src.Events = evs(1, 4, typ)
	if err := drain(t, a); err != nil {
		t.Fatal(err)
	}
	e4 := ev(4, typ)
	want, _ := applier.NextStateDigest(other, applier.DigestStep{ControlVersion: 4, EventID: e4.EventID, Type: typ, Outcome: "applied", EventDigest: applier.EventDigest(e4)})
	if got := stateDigest(t, db); got.Cursor != 4 || got.Digest != want {
		t.Errorf("digest %+v, want %s chained from the stored one", got, want)
	}
}
