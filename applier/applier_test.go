package applier_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/artifacttest"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
)

const typ = "test.insert"

func newApplier(t testing.TB, db *sql.DB, src feed.Source, st artifact.Store, h *insertHandler, mod func(*applier.Config)) *applier.Applier {
	t.Helper()
	cfg := &applier.Config{Handlers: map[string]applier.Handler{typ: h.handle}}
	if mod != nil {
		mod(cfg)
	}
	a, err := applier.New(db, src, st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestMigrate_Idempotent(t *testing.T) {
	db, _ := openDB(t)
	for range 3 {
		if err := applier.Migrate(context.Background(), db); err != nil {
			t.Fatal(err)
		}
	}
	if got := rowCount(t, db, `SELECT COUNT(*) FROM controlfeed_cursor`); got != 1 {
		t.Fatalf("cursor rows = %d, want 1", got)
	}
	if _, err := db.Exec(`UPDATE controlfeed_applier_schema SET version = 99`); err != nil {
		t.Fatal(err)
	}
	if err := applier.Migrate(context.Background(), db); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("Migrate on a newer schema: err = %v, want a 'newer' error", err)
	}
}

func TestConfig_Validate(t *testing.T) {
	for name, c := range map[string]applier.Config{
		"NegativePoll":    {PollInterval: -1},
		"NegativeBatch":   {MaxBatch: -1},
		"BackoffInverted": {MinBackoff: time.Second, MaxBackoff: time.Millisecond},
		"NilHandler":      {Handlers: map[string]applier.Handler{"x": nil}},
		"EmptyType":       {Handlers: map[string]applier.Handler{"": func(context.Context, *sql.Tx, controlevent.Event, []byte) error { return nil }}},
		"NegativePayload": {MaxPayloadBytes: -5},
	} {
		t.Run(name, func(t *testing.T) {
			if err := c.Validate(); err == nil {
				t.Fatal("Validate succeeded")
			}
			db, _ := openDB(t)
			if _, err := applier.New(db, &FakeSource{}, nil, &c); err == nil {
				t.Fatal("New succeeded")
			}
		})
	}
	var zero applier.Config
	if err := zero.Validate(); err != nil {
		t.Fatalf("zero Config: %v", err)
	}
}

func TestApplier_AppliesInOrder(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	src := &FakeSource{}
	var order []uint64
	h := newInsertHandler()
	h.FailFunc = func(e controlevent.Event) error { order = append(order, e.ControlVersion); return nil }
	a := newApplier(t, db, src, nil, h, nil)

	if n, err := a.Step(ctx); n != 0 || err != nil {
		t.Fatalf("Step on empty feed = %d, %v", n, err)
	}
	src.Add(ev(1, typ), ev(2, typ), ev(5, typ), ev(9, typ)) // gaps are allowed
	n, err := a.Step(ctx)
	if err != nil || n != 4 {
		t.Fatalf("Step = %d, %v; want 4, nil", n, err)
	}
	if !slices.Equal(order, []uint64{1, 2, 5, 9}) {
		t.Errorf("handler order = %v", order)
	}
	if c := cursorOf(t, db); c != 9 {
		t.Errorf("cursor = %d, want 9", c)
	}
	if got := rowCount(t, db, `SELECT COUNT(*) FROM controlfeed_applied_events WHERE outcome = 'applied'`); got != 4 {
		t.Errorf("applied_events = %d, want 4", got)
	}
	if got := rowCount(t, db, `SELECT COUNT(*) FROM t`); got != 4 {
		t.Errorf("rows = %d, want 4", got)
	}
	st := a.Status()
	if st.Cursor != 9 || st.Applied != 4 || st.Halted != nil || st.LastApplyAt.IsZero() {
		t.Errorf("Status = %+v", st)
	}
	src.Add(ev(10, typ))
	if n, err := a.Step(ctx); n != 1 || err != nil {
		t.Fatalf("steady-state Step = %d, %v", n, err)
	}
	stored, err := applier.ReadStatus(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Cursor != 10 || stored.Applied != 5 || stored.Skipped != 0 || stored.Halted != nil {
		t.Errorf("ReadStatus = %+v", stored)
	}
}

func TestApplier_AckAfterCommit(t *testing.T) {
	ctx := context.Background()
	db, path := openDB(t)
	other := openSecond(t, path)
	src := &FakeSource{}
	var checked atomic.Int32
	src.AckFunc = func(ctx context.Context, id string) error {
		// Through another connection pool: the commit must be visible.
		var outcome string
		if err := other.QueryRowContext(ctx, `SELECT outcome FROM controlfeed_applied_events WHERE event_id = ?`, id).Scan(&outcome); err != nil {
			t.Errorf("Ack(%q) before its applied_events row is visible: %v", id, err)
		}
		var cv uint64
		fmt.Sscanf(id, "evt-%d", &cv)
		if c := cursorOf(t, other); c < cv {
			t.Errorf("Ack(%q) while the cursor is %d", id, c)
		}
		checked.Add(1)
		return nil
	}
	a := newApplier(t, db, src, nil, newInsertHandler(), nil)
	src.Add(evs(1, 3, typ)...)
	if _, err := a.Step(ctx); err != nil {
		t.Fatal(err)
	}
	src.Add(ev(4, typ))
	if _, err := a.Step(ctx); err != nil {
		t.Fatal(err)
	}
	acks, _ := src.recorded()
	if want := []string{"evt-1", "evt-2", "evt-3", "evt-4"}; !slices.Equal(acks, want) {
		t.Errorf("acks = %v, want %v", acks, want)
	}
	if checked.Load() != 4 {
		t.Errorf("AckFunc checked %d acks", checked.Load())
	}
}

func TestApplier_AckErrorIsNotFatal(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	src := &FakeSource{AckFunc: func(context.Context, string) error { return errors.New("broker gone") }}
	a := newApplier(t, db, src, nil, newInsertHandler(), nil)
	src.Add(evs(1, 2, typ)...)
	if n, err := a.Step(ctx); n != 2 || err != nil {
		t.Fatalf("Step = %d, %v", n, err)
	}
	if c := cursorOf(t, db); c != 2 {
		t.Errorf("cursor = %d", c)
	}
}

func TestApplier_Acks(t *testing.T) {
	ctx := context.Background()
	t.Run("CumulativeOncePerBatch", func(t *testing.T) {
		db, _ := openDB(t)
		fs := &FakeSource{}
		a := newApplier(t, db, cumSource{fs}, nil, newInsertHandler(), func(c *applier.Config) { c.MaxBatch = 2 })
		fs.Add(evs(1, 5, typ)...)
		for range 3 {
			if _, err := a.Step(ctx); err != nil {
				t.Fatal(err)
			}
		}
		acks, through := fs.recorded()
		if len(acks) != 0 {
			t.Errorf("Ack called %v with a CumulativeAcker", acks)
		}
		if want := []string{"evt-2", "evt-4", "evt-5"}; !slices.Equal(through, want) {
			t.Errorf("AckThrough calls = %v, want %v", through, want)
		}
	})
	t.Run("PerEventFallback", func(t *testing.T) {
		db, _ := openDB(t)
		fs := &FakeSource{}
		a := newApplier(t, db, fs, nil, newInsertHandler(), nil)
		fs.Add(evs(1, 5, typ)...)
		if _, err := a.Step(ctx); err != nil {
			t.Fatal(err)
		}
		acks, _ := fs.recorded()
		if want := []string{"evt-1", "evt-2", "evt-3", "evt-4", "evt-5"}; !slices.Equal(acks, want) {
			t.Errorf("acks = %v, want %v", acks, want)
		}
	})
	t.Run("NoAcker", func(t *testing.T) {
		db, _ := openDB(t)
		fs := &FakeSource{}
		a := newApplier(t, db, plainSource{fs}, nil, newInsertHandler(), nil)
		fs.Add(evs(1, 2, typ)...)
		if n, err := a.Step(ctx); n != 2 || err != nil {
			t.Fatalf("Step = %d, %v", n, err)
		}
		if acks, _ := fs.recorded(); len(acks) != 0 {
			t.Errorf("acks = %v", acks)
		}
	})
}

func TestApplier_Duplicate(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	src := &FakeSource{}
	h := newInsertHandler()
	a := newApplier(t, db, src, nil, h, nil)
	dup := ev(1, typ)
	dup.ControlVersion = 3 // published again past the broker's dedup window
	src.Add(ev(1, typ), ev(2, typ), dup)
	if n, err := a.Step(ctx); n != 3 || err != nil {
		t.Fatalf("Step = %d, %v", n, err)
	}
	if c := h.count("evt-1"); c != 1 {
		t.Errorf("handler ran %d times for evt-1", c)
	}
	if c := cursorOf(t, db); c != 3 {
		t.Errorf("cursor = %d, want 3", c)
	}
	// A later redelivery in its own transaction.
	dup2 := ev(2, typ)
	dup2.ControlVersion = 4
	src.Add(dup2)
	if n, err := a.Step(ctx); n != 1 || err != nil {
		t.Fatalf("Step = %d, %v", n, err)
	}
	if c := h.count("evt-2"); c != 1 {
		t.Errorf("handler ran %d times for evt-2", c)
	}
	st := a.Status()
	if st.Cursor != 4 || st.Applied != 2 || st.Duplicates != 2 {
		t.Errorf("Status = %+v", st)
	}
}

func TestApplier_ReplayIsNoop(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	src := &FakeSource{}
	h := newInsertHandler()
	a := newApplier(t, db, src, nil, h, nil)
	src.Add(evs(1, 4, typ)...)
	if _, err := a.Step(ctx); err != nil {
		t.Fatal(err)
	}

	t.Run("SourceIgnoresCursor", func(t *testing.T) {
		src.PollFunc = func(context.Context, uint64) ([]controlevent.Event, error) { return src.after(0), nil }
		defer func() { src.PollFunc = nil }()
		if n, err := a.Step(ctx); n != 0 || err != nil {
			t.Fatalf("Step = %d, %v; want 0, nil", n, err)
		}
	})
	t.Run("CursorRewound", func(t *testing.T) {
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		if err := applier.SetCursor(ctx, tx, 1); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if n, err := a.Step(ctx); n != 3 || err != nil {
			t.Fatalf("Step = %d, %v; want 3 duplicates", n, err)
		}
		if c := cursorOf(t, db); c != 4 {
			t.Errorf("cursor = %d, want 4", c)
		}
	})
	for i := uint64(1); i <= 4; i++ {
		if c := h.count(fmt.Sprintf("evt-%d", i)); c != 1 {
			t.Errorf("handler ran %d times for evt-%d", c, i)
		}
	}
	if got := rowCount(t, db, `SELECT COUNT(*) FROM t`); got != 4 {
		t.Errorf("rows = %d", got)
	}
}

func TestApplier_Halts(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		event func(t *testing.T, st *artifacttest.MemStore) controlevent.Event
		want  error // errors.Is target, besides ErrHalted
		text  string
	}{
		{"MissingHandler", func(t *testing.T, st *artifacttest.MemStore) controlevent.Event { return ev(2, "nobody.handles") }, nil, "no handler"},
		{"Invalid", func(t *testing.T, st *artifacttest.MemStore) controlevent.Event {
			e := ev(2, typ)
			e.Checksum = "md5:nope"
			return e
		}, controlevent.ErrInvalid, ""},
		{"ChecksumMismatch", func(t *testing.T, st *artifacttest.MemStore) controlevent.Event {
			e := withArtifact(t, st, ev(2, typ), []byte("payload"))
			e.Checksum = controlevent.Checksum([]byte("other"))
			return e
		}, controlevent.ErrChecksumMismatch, ""},
		{"ArtifactNotFound", func(t *testing.T, st *artifacttest.MemStore) controlevent.Event {
			e := ev(2, typ)
			e.ArtifactRef = controlevent.Checksum([]byte("never stored"))
			e.Checksum = e.ArtifactRef
			return e
		}, artifact.ErrNotFound, "used the same artifact store"},
		{"ArtifactCorrupt", func(t *testing.T, st *artifacttest.MemStore) controlevent.Event {
			e := withArtifact(t, st, ev(2, typ), []byte("payload"))
			st.Replace(e.ArtifactRef, []byte("PAYLOAD"))
			return e
		}, artifact.ErrCorrupt, ""},
		{"ArtifactTooLarge", func(t *testing.T, st *artifacttest.MemStore) controlevent.Event {
			return withArtifact(t, st, ev(2, typ), make([]byte, 100))
		}, artifact.ErrTooLarge, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, path := openDB(t)
			st := artifacttest.NewMemStore()
			src := &FakeSource{}
			h := newInsertHandler()
			a := newApplier(t, db, src, st, h, func(c *applier.Config) { c.MaxPayloadBytes = 64 })
			bad := tc.event(t, st)
			src.Add(ev(1, typ), bad, ev(3, typ))
			n, err := a.Step(ctx)
			if !errors.Is(err, applier.ErrHalted) {
				t.Fatalf("Step err = %v, want ErrHalted", err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Step err = %v, want it to wrap %v", err, tc.want)
			}
			if tc.text != "" && !strings.Contains(err.Error(), tc.text) {
				t.Errorf("Step err = %v, want it to mention %q", err, tc.text)
			}
			if n != 1 || cursorOf(t, db) != 1 || h.count("evt-3") != 0 || h.count("evt-2") != 0 {
				t.Errorf("n=%d cursor=%d calls(evt-2)=%d calls(evt-3)=%d; want the prefix only", n, cursorOf(t, db), h.count("evt-2"), h.count("evt-3"))
			}
			hs := a.Status().Halted
			if hs == nil || hs.EventID != "evt-2" || hs.ControlVersion != 2 || hs.Attempts != 1 || hs.Error == "" {
				t.Fatalf("Status.Halted = %+v", hs)
			}
			stored, err := applier.ReadStatus(ctx, openSecond(t, path))
			if err != nil {
				t.Fatal(err)
			}
			if stored.Halted == nil || stored.Halted.EventID != "evt-2" || stored.Halted.Error != hs.Error {
				t.Errorf("persisted halt = %+v, want %+v", stored.Halted, hs)
			}
		})
	}
}

func TestApplier_HandlerErrorRetryThenSucceeds(t *testing.T) {
	ctx := context.Background()
	db, path := openDB(t)
	src := &FakeSource{}
	h := newInsertHandler()
	var broken atomic.Bool
	broken.Store(true)
	h.FailFunc = func(e controlevent.Event) error {
		if e.EventID == "evt-2" && broken.Load() {
			return errors.New("disk quota for tenant exceeded")
		}
		return nil
	}
	a := newApplier(t, db, src, nil, h, nil)
	src.Add(evs(1, 3, typ)...)
	for attempt := 1; attempt <= 3; attempt++ {
		_, err := a.Step(ctx)
		if !errors.Is(err, applier.ErrHalted) || !strings.Contains(err.Error(), "disk quota") {
			t.Fatalf("attempt %d: Step err = %v", attempt, err)
		}
		hs := a.Status().Halted
		if hs == nil || hs.Attempts != attempt || hs.LastAttempt.Before(hs.Since) {
			t.Fatalf("attempt %d: Halted = %+v", attempt, hs)
		}
	}
	if c, n := cursorOf(t, db), rowCount(t, db, `SELECT COUNT(*) FROM t`); c != 1 || n != 1 {
		t.Fatalf("cursor=%d rows=%d while halted; want 1, 1", c, n)
	}
	// A restarted applier picks up the persisted halt and its attempt count.
	a2 := newApplier(t, openSecond(t, path), src, nil, h, nil)
	if _, err := a2.Step(ctx); !errors.Is(err, applier.ErrHalted) {
		t.Fatal(err)
	}
	if hs := a2.Status().Halted; hs == nil || hs.Attempts != 4 {
		t.Fatalf("restarted Halted = %+v, want Attempts 4", hs)
	}

	broken.Store(false)
	n, err := a2.Step(ctx)
	if n != 2 || err != nil {
		t.Fatalf("Step after fix = %d, %v", n, err)
	}
	if a2.Status().Halted != nil {
		t.Error("Status.Halted still set")
	}
	if stored, err := applier.ReadStatus(ctx, db); err != nil || stored.Halted != nil || stored.Cursor != 3 {
		t.Errorf("ReadStatus = %+v, %v", stored, err)
	}
}

func TestSkip(t *testing.T) {
	ctx := context.Background()
	db, path := openDB(t)
	other := openSecond(t, path) // the operator's process
	src := &FakeSource{}
	h := newInsertHandler()
	h.FailFunc = func(e controlevent.Event) error {
		if e.EventID == "evt-2" {
			return errors.New("poison")
		}
		return nil
	}
	a := newApplier(t, db, src, nil, h, nil)

	if err := applier.Skip(ctx, other, "evt-2"); !errors.Is(err, applier.ErrNotHalted) {
		t.Fatalf("Skip while not halted: %v", err)
	}
	src.Add(evs(1, 3, typ)...)
	if _, err := a.Step(ctx); !errors.Is(err, applier.ErrHalted) {
		t.Fatal(err)
	}
	if err := applier.Skip(ctx, other, "evt-3"); !errors.Is(err, applier.ErrNotHalted) {
		t.Fatalf("Skip of a non-halted event: %v", err)
	}
	if err := applier.Skip(ctx, other, "evt-2"); err != nil {
		t.Fatal(err)
	}
	if err := applier.Skip(ctx, other, "evt-2"); err == nil {
		t.Fatal("second Skip succeeded")
	}
	calls := h.count("evt-2")
	if n, err := a.Step(ctx); n != 2 || err != nil {
		t.Fatalf("Step after Skip = %d, %v", n, err)
	}
	if h.count("evt-2") != calls {
		t.Error("handler ran for the skipped event")
	}
	var outcome string
	var cv int64
	if err := other.QueryRow(`SELECT outcome, control_version FROM controlfeed_applied_events WHERE event_id = 'evt-2'`).Scan(&outcome, &cv); err != nil || outcome != "skipped" || cv != 2 {
		t.Errorf("evt-2 recorded as %q at %d (%v)", outcome, cv, err)
	}
	st := a.Status()
	if st.Cursor != 3 || st.Skipped != 1 || st.Applied != 2 || st.Halted != nil {
		t.Errorf("Status = %+v", st)
	}
	stored, err := applier.ReadStatus(ctx, other)
	if err != nil || stored.Skipped != 1 || stored.Applied != 2 || stored.Halted != nil {
		t.Errorf("ReadStatus = %+v, %v", stored, err)
	}
	if err := applier.Skip(ctx, other, "evt-2"); !errors.Is(err, applier.ErrNotHalted) {
		t.Errorf("Skip after resolution: %v", err)
	}
}

func TestSkip_InvalidEvent(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	src := &FakeSource{}
	a := newApplier(t, db, src, nil, newInsertHandler(), nil)
	bad := ev(1, typ)
	bad.Checksum = "garbage"
	src.Add(bad, ev(2, typ))
	if _, err := a.Step(ctx); !errors.Is(err, controlevent.ErrInvalid) {
		t.Fatalf("Step: %v", err)
	}
	if err := applier.Skip(ctx, db, "evt-1"); err != nil {
		t.Fatal(err)
	}
	if n, err := a.Step(ctx); n != 2 || err != nil {
		t.Fatalf("Step after skipping the invalid event = %d, %v", n, err)
	}
}

func TestApplier_BatchFailingMiddle(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	src := &FakeSource{}
	h := newInsertHandler()
	// The handler writes, then fails: the savepoint must undo its write.
	failing := &atomic.Bool{}
	failing.Store(true)
	cfg := func(c *applier.Config) {
		c.Handlers[typ] = func(ctx context.Context, tx *sql.Tx, e controlevent.Event, p []byte) error {
			if err := h.handle(ctx, tx, e, p); err != nil {
				return err
			}
			if e.ControlVersion == 3 && failing.Load() {
				return errors.New("fails after writing")
			}
			return nil
		}
	}
	a := newApplier(t, db, src, nil, h, cfg)
	src.Add(evs(1, 5, typ)...)
	n, err := a.Step(ctx)
	if n != 2 || !errors.Is(err, applier.ErrHalted) {
		t.Fatalf("Step = %d, %v; want 2, ErrHalted", n, err)
	}
	if c := cursorOf(t, db); c != 2 {
		t.Errorf("cursor = %d, want 2", c)
	}
	var keys []string
	rows, err := db.Query(`SELECT id FROM t ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k string
		rows.Scan(&k)
		keys = append(keys, k)
	}
	if !slices.Equal(keys, []string{"k1", "k2"}) {
		t.Errorf("rows = %v, want [k1 k2]", keys)
	}
	if got := rowCount(t, db, `SELECT COUNT(*) FROM controlfeed_applied_events`); got != 2 {
		t.Errorf("applied_events = %d, want 2", got)
	}
	if h := a.Status().Halted; h == nil || h.EventID != "evt-3" {
		t.Errorf("Halted = %+v", h)
	}
	failing.Store(false)
	if n, err := a.Step(ctx); n != 3 || err != nil {
		t.Fatalf("retry = %d, %v", n, err)
	}
}

func TestApplier_NonAscendingHalts(t *testing.T) {
	ctx := context.Background()
	for name, cvs := range map[string][]uint64{
		"Descending": {1, 3, 2},
		"Repeated":   {1, 2, 2},
	} {
		t.Run(name, func(t *testing.T) {
			db, _ := openDB(t)
			src := &FakeSource{}
			var out []controlevent.Event
			for i, cv := range cvs {
				e := ev(cv, typ)
				e.EventID = fmt.Sprintf("e%d", i)
				out = append(out, e)
			}
			src.PollFunc = func(context.Context, uint64) ([]controlevent.Event, error) { return out, nil }
			h := newInsertHandler()
			a := newApplier(t, db, src, nil, h, nil)
			n, err := a.Step(ctx)
			if !errors.Is(err, applier.ErrHalted) || !strings.Contains(err.Error(), "ascending") {
				t.Fatalf("Step err = %v", err)
			}
			if n != 2 || h.count("e2") != 0 {
				t.Errorf("n = %d, calls(e2) = %d", n, h.count("e2"))
			}
		})
	}
	t.Run("ZeroControlVersion", func(t *testing.T) {
		db, _ := openDB(t)
		src := &FakeSource{}
		src.PollFunc = func(context.Context, uint64) ([]controlevent.Event, error) {
			return []controlevent.Event{ev(0, typ)}, nil
		}
		a := newApplier(t, db, src, nil, newInsertHandler(), nil)
		if _, err := a.Step(ctx); !errors.Is(err, applier.ErrHalted) || !errors.Is(err, controlevent.ErrInvalid) {
			t.Fatalf("Step err = %v", err)
		}
	})
}

func TestApplier_BehindRetention(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	src := &FakeSource{}
	a := newApplier(t, db, src, nil, newInsertHandler(), nil)
	src.PollFunc = func(_ context.Context, since uint64) ([]controlevent.Event, error) {
		return nil, fmt.Errorf("fake: poll: %w", &feed.CursorBehindError{Source: "fake", Cursor: since, FirstAvailable: 100})
	}
	_, err := a.Step(ctx)
	if !errors.Is(err, feed.ErrCursorBehindRetention) {
		t.Fatalf("Step err = %v", err)
	}
	br := a.Status().BehindRetention
	if br == nil || br.FirstAvailable != 100 || br.Cursor != 0 {
		t.Fatalf("BehindRetention = %+v", br)
	}
	// Re-bootstrapped: the cursor moves to the snapshot's position.
	tx, _ := db.Begin()
	if err := applier.SetCursor(ctx, tx, 99); err != nil {
		t.Fatal(err)
	}
	tx.Commit()
	src.PollFunc = nil
	src.Add(ev(100, typ))
	if n, err := a.Step(ctx); n != 1 || err != nil {
		t.Fatalf("Step after re-bootstrap = %d, %v", n, err)
	}
	if st := a.Status(); st.BehindRetention != nil || st.Cursor != 100 {
		t.Errorf("Status = %+v", st)
	}
}

func TestApplier_PayloadDelivered(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	st := artifacttest.NewMemStore()
	src := &FakeSource{}
	a := newApplier(t, db, src, st, newInsertHandler(), nil)
	src.Add(withArtifact(t, st, ev(1, typ), []byte("hello")), ev(2, typ))
	if _, err := a.Step(ctx); err != nil {
		t.Fatal(err)
	}
	var v []byte
	if err := db.QueryRow(`SELECT v FROM t WHERE id = 'k1'`).Scan(&v); err != nil || string(v) != "hello" {
		t.Errorf("payload = %q, %v", v, err)
	}
	if err := db.QueryRow(`SELECT v FROM t WHERE id = 'k2'`).Scan(&v); err != nil || v != nil {
		t.Errorf("payload without artifact = %q, %v", v, err)
	}
}

func TestApplier_DuplicateSkipsFetch(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	st := artifacttest.NewMemStore()
	src := &FakeSource{}
	a := newApplier(t, db, src, st, newInsertHandler(), nil)
	e := withArtifact(t, st, ev(1, typ), []byte("x"))
	src.Add(e)
	if _, err := a.Step(ctx); err != nil {
		t.Fatal(err)
	}
	st.GetFunc = func(context.Context, string) (io.ReadCloser, error) {
		return nil, errors.New("store must not be read for a duplicate")
	}
	e.ControlVersion = 2
	src.Add(e)
	if n, err := a.Step(ctx); n != 1 || err != nil {
		t.Fatalf("Step = %d, %v", n, err)
	}
}

func TestApplier_Head(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	fs := &FakeSource{}
	a := newApplier(t, db, headSource{fs, 42}, nil, newInsertHandler(), nil)
	if st := a.Status(); st.HeadKnown {
		t.Fatal("HeadKnown before any Step")
	}
	if _, err := a.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if st := a.Status(); !st.HeadKnown || st.Head != 42 {
		t.Errorf("Status = %+v", st)
	}
	b := newApplier(t, db, fs, nil, newInsertHandler(), nil)
	b.Step(ctx)
	if b.Status().HeadKnown {
		t.Error("HeadKnown without a HeadReporter")
	}
}

func TestApplier_Run(t *testing.T) {
	db, _ := openDB(t)
	src := &FakeSource{}
	h := newInsertHandler()
	var fails atomic.Int32
	h.FailFunc = func(e controlevent.Event) error {
		if e.ControlVersion == 7 && fails.Add(1) <= 3 {
			return errors.New("transient")
		}
		return nil
	}
	a := newApplier(t, db, src, nil, h, func(c *applier.Config) {
		c.PollInterval = time.Millisecond
		c.MinBackoff, c.MaxBackoff = time.Millisecond, 4*time.Millisecond
		c.MaxBatch = 4
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	src.Add(evs(1, 10, typ)...)
	deadline := time.Now().Add(30 * time.Second) // a hang guard, not a speed assertion
	for a.Status().Cursor < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("Run did not reach cursor 10: %+v", a.Status())
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if fails.Load() < 4 {
		t.Errorf("event 7 attempted %d times, want 4", fails.Load())
	}
	if st := a.Status(); st.Applied != 10 || st.Halted != nil {
		t.Errorf("Status = %+v", st)
	}
}

func TestApplier_RunWithoutMigrate(t *testing.T) {
	db, _ := openDB(t)
	if _, err := db.Exec(`DROP TABLE controlfeed_cursor`); err != nil {
		t.Fatal(err)
	}
	a := newApplier(t, db, &FakeSource{}, nil, newInsertHandler(), nil)
	if err := a.Run(context.Background()); err == nil {
		t.Fatal("Run on an unmigrated database returned nil")
	}
}

// A message the feed cannot decode (feed.InvalidEventError) halts the node at
// its position, visibly and persistently, instead of failing every round with
// an unnamed error; an operator skips it by the id the feed reported and the
// node moves past it.
func TestApplier_InvalidFeedMessageHaltsAndSkips(t *testing.T) {
	ctx := context.Background()
	db, path := openDB(t)
	bad := &feed.InvalidEventError{Source: "fake", ControlVersion: 2, EventID: feed.UnreadableEventID(2),
		Err: fmt.Errorf("decode: not json: %w", controlevent.ErrInvalid)}
	src := &FakeSource{PollFunc: func(ctx context.Context, since uint64) ([]controlevent.Event, error) {
		switch {
		case since < 1:
			return evs(1, 1, typ), nil
		case since == 1:
			return nil, bad
		default:
			return evs(3, 3, typ), nil
		}
	}}
	h := newInsertHandler()
	a := newApplier(t, db, src, nil, h, nil)
	if n, err := a.Step(ctx); n != 1 || err != nil {
		t.Fatalf("first Step = %d, %v", n, err)
	}
	for range 2 {
		if _, err := a.Step(ctx); !errors.Is(err, applier.ErrHalted) || !errors.Is(err, feed.ErrInvalidEvent) {
			t.Fatalf("Step at the invalid message: %v, want ErrHalted wrapping feed.ErrInvalidEvent", err)
		}
	}
	st := a.Status()
	if st.Halted == nil || st.Halted.EventID != "unreadable@2" || st.Halted.ControlVersion != 2 ||
		!strings.Contains(st.Halted.Error, "not a valid event") || st.Halted.Attempts != 2 {
		t.Fatalf("Status().Halted = %+v", st.Halted)
	}
	if got := cursorOf(t, db); got != 1 {
		t.Fatalf("cursor = %d while halted, want 1", got)
	}
	stored, err := applier.ReadStatus(ctx, openSecond(t, path))
	if err != nil || stored.Halted == nil || stored.Halted.EventID != "unreadable@2" {
		t.Fatalf("ReadStatus from another process = %+v, %v", stored.Halted, err)
	}
	if err := applier.Skip(ctx, openSecond(t, path), "unreadable@2"); err != nil {
		t.Fatal(err)
	}
	if n, err := a.Step(ctx); n != 1 || err != nil {
		t.Fatalf("Step after the skip = %d, %v", n, err)
	}
	if got := cursorOf(t, db); got != 2 {
		t.Fatalf("cursor = %d after the skip, want 2", got)
	}
	if n, err := a.Step(ctx); n != 1 || err != nil || h.count("evt-3") != 1 || a.Status().Halted != nil {
		t.Fatalf("Step after the invalid message = %d, %v; evt-3 applied %d times; halted %+v", n, err, h.count("evt-3"), a.Status().Halted)
	}
	if n := rowCount(t, db, `SELECT count(*) FROM controlfeed_applied_events WHERE event_id = 'unreadable@2' AND outcome = 'skipped'`); n != 1 {
		t.Fatalf("skipped record count = %d, want 1", n)
	}
}

// A feed that cannot be read makes the applier unavailable (not halted),
// visible in Status until a Poll succeeds.
func TestApplier_FeedErrorInStatus(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	fail := true
	src := &FakeSource{PollFunc: func(ctx context.Context, since uint64) ([]controlevent.Event, error) {
		if fail {
			return nil, errors.New(`read 00000000000000000007.json: permission denied`)
		}
		return evs(since+1, since+1, typ), nil
	}}
	a := newApplier(t, db, src, nil, newInsertHandler(), nil)
	for range 2 {
		if _, err := a.Step(ctx); !errors.Is(err, applier.ErrUnavailable) || errors.Is(err, applier.ErrHalted) {
			t.Fatalf("Step on a failing feed: %v, want ErrUnavailable", err)
		}
	}
	st := a.Status()
	u := st.Unavailable
	if st.State != applier.StateUnavailable || u == nil || u.Op != applier.OpPoll || !strings.Contains(u.Error, "permission denied") ||
		u.Since.IsZero() || u.Attempts != 2 || st.Halted != nil {
		t.Fatalf("Status after failing polls: state %v, unavailable %+v, halted %+v", st.State, u, st.Halted)
	}
	fail = false
	if n, err := a.Step(ctx); n != 1 || err != nil {
		t.Fatalf("Step after the feed recovered = %d, %v", n, err)
	}
	if st := a.Status(); st.Unavailable != nil || st.State != applier.StateApplying {
		t.Fatalf("Status after recovery: state %v, unavailable %+v", st.State, st.Unavailable)
	}
}

// movingHead is a FakeSource whose feed.HeadReporter answer can change.
type movingHead struct {
	*FakeSource
	head atomic.Uint64
}

func (s *movingHead) Head(context.Context) (uint64, error) { return s.head.Load(), nil }

// appliedFiveWithHead returns an applier that has applied events 1..5 from
// a movingHead source whose head is 5.
func appliedFiveWithHead(t *testing.T) (*applier.Applier, *movingHead) {
	t.Helper()
	db, _ := openDB(t)
	src := &movingHead{FakeSource: &FakeSource{}}
	src.Add(evs(1, 5, typ)...)
	src.head.Store(5)
	a := newApplier(t, db, src, nil, newInsertHandler(), nil)
	if n, err := a.Step(context.Background()); n != 5 || err != nil {
		t.Fatalf("Step = %d, %v", n, err)
	}
	return a, src
}

// A feed whose head falls below the cursor (recreated, or lost its newest
// events) is reported once two head reads a second apart confirm it, with
// what to do; the report stays when the head passes the cursor later (the
// skipped events do not come back). A single low read is not reported.
func TestApplier_FeedBehindCursor(t *testing.T) {
	ctx := context.Background()
	a, src := appliedFiveWithHead(t)
	step := func() applier.Status {
		t.Helper()
		time.Sleep(1100 * time.Millisecond) // the head is read at most once a second
		if _, err := a.Step(ctx); err != nil {
			t.Fatal(err)
		}
		return a.Status()
	}
	src.head.Store(2)
	if st := step(); st.FeedBehindCursor != "" {
		t.Fatalf("reported after one head read below the cursor: %q", st.FeedBehindCursor)
	}
	st := step()
	if !strings.Contains(st.FeedBehindCursor, "head is at control version 2, below this node's cursor 5") ||
		!strings.Contains(st.FeedBehindCursor, "re-bootstrap") {
		t.Fatalf("FeedBehindCursor = %q, want the positions and what to do", st.FeedBehindCursor)
	}
	src.head.Store(7)
	if st := step(); st.FeedBehindCursor == "" {
		t.Fatal("the report cleared when the recreated feed's head passed the cursor")
	}

	// One low read alone (a broker still starting) is not reported.
	a2, src2 := appliedFiveWithHead(t)
	for _, h := range []uint64{0, 5, 0, 5} {
		src2.head.Store(h)
		time.Sleep(1100 * time.Millisecond)
		if _, err := a2.Step(ctx); err != nil {
			t.Fatal(err)
		}
		if st := a2.Status(); st.FeedBehindCursor != "" {
			t.Fatalf("reported after single low reads between good ones (head %d): %q", h, st.FeedBehindCursor)
		}
	}
}

// With Config.Registerer the applier observes one apply duration per
// committed transaction and one event age per applied event; a second
// Applier on the same registry is refused, not a panic.
func TestApplier_Metrics(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	reg := prometheus.NewPedanticRegistry()
	src := &FakeSource{Events: evs(1, 3, typ)}
	a := newApplier(t, db, src, nil, newInsertHandler(), func(c *applier.Config) { c.Registerer = reg })
	if n, err := a.Step(ctx); n != 3 || err != nil {
		t.Fatalf("Step = %d, %v", n, err)
	}
	if n := testutil.CollectAndCount(reg, applier.MetricApplyDuration, applier.MetricEventAge); n != 2 {
		t.Fatalf("%d histograms registered, want 2", n)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	for _, mf := range mfs {
		counts[mf.GetName()] = mf.GetMetric()[0].GetHistogram().GetSampleCount()
	}
	if counts[applier.MetricApplyDuration] != 1 || counts[applier.MetricEventAge] != 3 {
		t.Errorf("sample counts %v, want 1 transaction and 3 events", counts)
	}
	if _, err := applier.New(db, src, nil, &applier.Config{Registerer: reg}); err == nil || !strings.Contains(err.Error(), "register metrics") {
		t.Errorf("second Applier on one registry: %v", err)
	}
}
