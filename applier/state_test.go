package applier_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/artifact/artifacttest"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/internal/failpoint"
)

// denseSource is a FakeSource that promises dense positions
// (feed.GapChecker). CheckGapFunc answers CheckGap; by default every hole
// is reported as a gap the feed still holds.
type denseSource struct {
	*FakeSource
	mu           sync.Mutex
	CheckGapFunc func(ctx context.Context, cursor, next uint64) error
	checks       [][2]uint64
}

var _ feed.GapChecker = (*denseSource)(nil)

func newDenseSource(evs ...controlevent.Event) *denseSource {
	s := &denseSource{FakeSource: &FakeSource{}}
	s.Add(evs...)
	return s
}

func (s *denseSource) CheckGap(ctx context.Context, cursor, next uint64) error {
	s.mu.Lock()
	s.checks = append(s.checks, [2]uint64{cursor, next})
	f := s.CheckGapFunc
	s.mu.Unlock()
	if f != nil {
		return f(ctx, cursor, next)
	}
	return &feed.GapError{Source: s.Name(), Cursor: cursor, Next: next, Missing: cursor + 1}
}

func (s *denseSource) checked() [][2]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.checks)
}

// persistedHalt returns the halt another process reads from the database.
func persistedHalt(t *testing.T, db *sql.DB) *applier.Halt {
	t.Helper()
	st, err := applier.ReadStatus(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return st.Halted
}

// A dense feed that delivers [1, 2, 4] has a hole at 3 that it still
// holds: the applier commits 1 and 2, applies nothing past 2, reports the
// gap (not as a halt: nothing to skip) and, polling again, goes on once the
// feed delivers 3.
func TestApplier_GapBackstop(t *testing.T) {
	ctx := context.Background()
	db, path := openDB(t)
	src := newDenseSource(ev(1, typ), ev(2, typ), ev(4, typ))
	h := newInsertHandler()
	a := newApplier(t, db, src, nil, h, nil)

	n, err := a.Step(ctx)
	if n != 2 || !errors.Is(err, feed.ErrGap) || errors.Is(err, applier.ErrHalted) {
		t.Fatalf("Step = %d, %v; want 2 and a gap error, not a halt", n, err)
	}
	var ge *feed.GapError
	if !errors.As(err, &ge) || ge.Cursor != 2 || ge.Next != 4 {
		t.Fatalf("Step error %v: want a *feed.GapError after 2 before 4", err)
	}
	if c := cursorOf(t, db); c != 2 {
		t.Fatalf("cursor = %d, want 2: never past the hole", c)
	}
	if h.count("evt-4") != 0 {
		t.Fatal("the handler ran for the event after the hole")
	}
	if got := src.checked(); !slices.Equal(got, [][2]uint64{{2, 4}}) {
		t.Fatalf("CheckGap calls %v, want [[2 4]]", got)
	}
	st := a.Status()
	if g := st.Gap; st.State != applier.StateGap || g == nil || g.Cursor != 2 || g.Next != 4 || g.Missing != 3 ||
		g.Attempts != 1 || st.Gaps != 1 || st.Halted != nil || st.Unavailable != nil {
		t.Fatalf("Status: state %v, gap %+v, gaps %d, halted %+v", st.State, st.Gap, st.Gaps, st.Halted)
	}
	// Again, without committing anything: the hole is checked against the
	// cursor.
	if n, err := a.Step(ctx); n != 0 || !errors.Is(err, feed.ErrGap) {
		t.Fatalf("second Step = %d, %v; want 0 and the gap again", n, err)
	}
	if g := a.Status().Gap; g == nil || g.Attempts != 2 || a.Status().Gaps != 1 {
		t.Fatalf("after the second round: gap %+v, gaps %d; want 2 attempts of one gap", g, a.Status().Gaps)
	}
	if hs := persistedHalt(t, openSecond(t, path)); hs != nil {
		t.Fatalf("a gap was persisted as a halt: %+v", hs)
	}
	if err := applier.Skip(ctx, openSecond(t, path), "evt-4"); !errors.Is(err, applier.ErrNotHalted) {
		t.Fatalf("Skip of the event after a gap: %v; want ErrNotHalted", err)
	}

	src.Add(ev(3, typ))
	src.mu.Lock()
	slices.SortFunc(src.Events, func(x, y controlevent.Event) int { return int(x.ControlVersion) - int(y.ControlVersion) })
	src.mu.Unlock()
	if n, err := a.Step(ctx); n != 2 || err != nil {
		t.Fatalf("Step once 3 is delivered = %d, %v; want 2, nil", n, err)
	}
	if c := cursorOf(t, db); c != 4 {
		t.Fatalf("cursor = %d, want 4", c)
	}
	if st := a.Status(); st.State != applier.StateApplying || st.Gap != nil {
		t.Fatalf("after the hole filled: state %v, gap %+v", st.State, st.Gap)
	}
}

// The first event of a Poll is checked against the cursor too.
func TestApplier_GapAfterCursor(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	src := newDenseSource(ev(1, typ), ev(2, typ))
	a := newApplier(t, db, src, nil, newInsertHandler(), nil)
	if n, err := a.Step(ctx); n != 2 || err != nil {
		t.Fatalf("Step = %d, %v", n, err)
	}
	src.Add(ev(5, typ))
	if n, err := a.Step(ctx); n != 0 || !errors.Is(err, feed.ErrGap) {
		t.Fatalf("Step = %d, %v; want 0 and a gap", n, err)
	}
	if got := src.checked(); !slices.Equal(got, [][2]uint64{{2, 5}}) {
		t.Fatalf("CheckGap calls %v, want [[2 5]]", got)
	}
	if c := cursorOf(t, db); c != 2 {
		t.Fatalf("cursor = %d, want 2", c)
	}
}

// Positions the feed deleted (CheckGap says so) are passed over.
func TestApplier_GapDeleted(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	src := newDenseSource(ev(1, typ), ev(2, typ), ev(4, typ))
	src.CheckGapFunc = func(context.Context, uint64, uint64) error { return nil }
	a := newApplier(t, db, src, nil, newInsertHandler(), nil)
	if n, err := a.Step(ctx); n != 3 || err != nil {
		t.Fatalf("Step = %d, %v; want 3, nil", n, err)
	}
	if got := src.checked(); !slices.Equal(got, [][2]uint64{{2, 4}}) {
		t.Fatalf("CheckGap calls %v, want [[2 4]]: the applier must ask", got)
	}
	if c := cursorOf(t, db); c != 4 {
		t.Fatalf("cursor = %d, want 4", c)
	}
}

// A CheckGap that cannot tell (the broker does not answer) applies nothing
// past the hole either, and is not a halt.
func TestApplier_GapCheckFails(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	src := newDenseSource(ev(1, typ), ev(3, typ))
	src.CheckGapFunc = func(context.Context, uint64, uint64) error {
		return fmt.Errorf("natsfeed: stream info: %w", context.DeadlineExceeded)
	}
	a := newApplier(t, db, src, nil, newInsertHandler(), nil)
	n, err := a.Step(ctx)
	if n != 1 || err == nil || errors.Is(err, applier.ErrHalted) {
		t.Fatalf("Step = %d, %v; want 1 and an error that is not a halt", n, err)
	}
	if c := cursorOf(t, db); c != 1 {
		t.Fatalf("cursor = %d, want 1", c)
	}
	if hs := persistedHalt(t, db); hs != nil {
		t.Fatalf("persisted halt %+v", hs)
	}
	if st := a.Status(); st.State != applier.StateUnavailable || st.Unavailable == nil || st.Unavailable.Op != applier.OpCheckGap ||
		st.Unavailable.ControlVersion != 3 || !errors.Is(err, applier.ErrUnavailable) {
		t.Fatalf("state %v, unavailable %+v, err %v; want unavailable at 3 checking the gap", st.State, st.Unavailable, err)
	}
}

// A Poll that reports a gap itself is no halt either.
func TestApplier_PollGap(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	src := &FakeSource{PollFunc: func(_ context.Context, since uint64) ([]controlevent.Event, error) {
		return nil, &feed.GapError{Source: "fake", Cursor: since, Next: since + 3, Reason: "another process consumes as this node"}
	}}
	a := newApplier(t, db, src, nil, newInsertHandler(), nil)
	if _, err := a.Step(ctx); !errors.Is(err, feed.ErrGap) || errors.Is(err, applier.ErrHalted) {
		t.Fatalf("Step = %v; want a gap error", err)
	}
	if hs := persistedHalt(t, db); hs != nil || a.Status().Halted != nil {
		t.Fatalf("halted on a gap: %+v", hs)
	}
	if g := a.Status().Gap; a.Status().State != applier.StateGap || g == nil || g.Cursor != 0 || g.Next != 3 ||
		!strings.Contains(g.Error, "another process consumes as this node") {
		t.Fatalf("state %v, gap %+v", a.Status().State, g)
	}
}

// A commit that fails because the disk is full is the infrastructure's
// fault, not the event's: nothing is persisted as a halt, Skip refuses,
// and the applier applies the batch by itself once space is back.
func TestApplier_DiskFullIsNotAHalt(t *testing.T) {
	ctx := context.Background()
	db, path := openDB(t)
	src := &FakeSource{}
	src.Add(evs(1, 3, typ)...)
	a := newApplier(t, db, src, nil, newInsertHandler(), nil)
	enableFailpoints(t, failpoint.ApplierBeforeCommit+"=enospc")

	n, err := a.Step(ctx)
	if n != 0 || err == nil || errors.Is(err, applier.ErrHalted) || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("Step = %d, %v; want 0 and an ENOSPC error that is not a halt", n, err)
	}
	if st := a.Status(); st.Halted != nil || st.State != applier.StateUnavailable || !errors.Is(err, applier.ErrUnavailable) {
		t.Fatalf("Status: state %v, halted %+v on a full disk; want unavailable", st.State, st.Halted)
	}
	other := openSecond(t, path)
	if hs := persistedHalt(t, other); hs != nil {
		t.Fatalf("a full disk was persisted as a halt: %+v", hs)
	}
	if err := applier.Skip(ctx, other, "evt-1"); !errors.Is(err, applier.ErrNotHalted) {
		t.Fatalf("Skip on a node with a full disk: %v; want ErrNotHalted", err)
	}
	failpoint.Disable()
	if n, err := a.Step(ctx); n != 3 || err != nil {
		t.Fatalf("Step once the disk has space = %d, %v; want 3, nil", n, err)
	}
}

// SQLITE_FULL from the handler's own statement (the database hit its size
// limit) is no halt either.
func TestApplier_SQLiteFullInHandlerIsNotAHalt(t *testing.T) {
	ctx := context.Background()
	db, path := openDB(t)
	db.SetMaxOpenConns(1) // the page limit below is per connection
	var pages int64
	if err := db.QueryRow(`PRAGMA page_count`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(fmt.Sprintf(`PRAGMA max_page_count = %d`, pages)); err != nil {
		t.Fatal(err)
	}
	big := func(ctx context.Context, tx *sql.Tx, e controlevent.Event, _ []byte) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO t (id, v) VALUES (?, zeroblob(1048576))`, e.Key)
		return err
	}
	src := &FakeSource{}
	src.Add(ev(1, typ))
	a, err := applier.New(db, src, nil, &applier.Config{Handlers: map[string]applier.Handler{typ: big}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Step(ctx)
	if err == nil || errors.Is(err, applier.ErrHalted) || !strings.Contains(err.Error(), "full") {
		t.Fatalf("Step = %v; want SQLITE_FULL, not a halt", err)
	}
	if st := a.Status(); st.Halted != nil || st.State != applier.StateUnavailable || st.Unavailable.Op != applier.OpApply {
		t.Fatalf("Status: state %v, halted %+v, unavailable %+v; want unavailable in apply", st.State, st.Halted, st.Unavailable)
	}
	if err := applier.Skip(ctx, openSecond(t, path), "evt-1"); !errors.Is(err, applier.ErrNotHalted) {
		t.Fatalf("Skip: %v; want ErrNotHalted", err)
	}
	if _, err := db.Exec(`PRAGMA max_page_count = 1073741823`); err != nil {
		t.Fatal(err)
	}
	if n, err := a.Step(ctx); n != 1 || err != nil {
		t.Fatalf("Step with room = %d, %v", n, err)
	}
}

// SQLITE_BUSY at BEGIN (another process holds the write lock past the busy
// timeout) is no halt.
func TestApplier_SQLiteBusyIsNotAHalt(t *testing.T) {
	ctx := context.Background()
	db, path := openDB(t)
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`PRAGMA busy_timeout = 0`); err != nil {
		t.Fatal(err)
	}
	// Another process's writer: a plain connection, outside this
	// process's write lock, holding SQLite's.
	holderDB, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(0)")
	if err != nil {
		t.Fatal(err)
	}
	defer holderDB.Close()
	holder, err := holderDB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if _, err := holder.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	src := &FakeSource{}
	src.Add(evs(1, 2, typ)...)
	a := newApplier(t, db, src, nil, newInsertHandler(), nil)
	_, err = a.Step(ctx)
	if err == nil || errors.Is(err, applier.ErrHalted) || !strings.Contains(err.Error(), "SQLITE_BUSY") {
		t.Fatalf("Step = %v; want SQLITE_BUSY, not a halt", err)
	}
	if st := a.Status(); st.Halted != nil || st.State != applier.StateUnavailable || st.Unavailable.Op != applier.OpCommit {
		t.Fatalf("Status: state %v, halted %+v, unavailable %+v; want unavailable at commit", st.State, st.Halted, st.Unavailable)
	}
	if _, err := holder.ExecContext(ctx, `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	if hs := persistedHalt(t, db); hs != nil {
		t.Fatalf("persisted halt %+v", hs)
	}
	if err := applier.Skip(ctx, openSecond(t, path), "evt-1"); !errors.Is(err, applier.ErrNotHalted) {
		t.Fatalf("Skip: %v; want ErrNotHalted", err)
	}
	if n, err := a.Step(ctx); n != 2 || err != nil {
		t.Fatalf("Step once the lock is free = %d, %v", n, err)
	}
}

// An artifact store that times out (a broker failover) is unavailable, not
// a missing artifact: no halt, nothing to skip; the fetch is retried.
func TestApplier_ArtifactTimeoutIsNotAHalt(t *testing.T) {
	ctx := context.Background()
	db, path := openDB(t)
	st := artifacttest.NewMemStore()
	src := &FakeSource{}
	e := withArtifact(t, st, ev(1, typ), []byte("payload"))
	src.Add(e)
	var down sync.Mutex
	failing := true
	st.GetFunc = func(ctx context.Context, ref string) (io.ReadCloser, error) {
		down.Lock()
		defer down.Unlock()
		if failing {
			return nil, fmt.Errorf("natsobject: get %s: %w", ref, context.DeadlineExceeded)
		}
		return st.Reopen().Get(ctx, ref)
	}
	a := newApplier(t, db, src, st, newInsertHandler(), nil)
	_, err := a.Step(ctx)
	if err == nil || errors.Is(err, applier.ErrHalted) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Step = %v; want the timeout, not a halt", err)
	}
	if st := a.Status(); st.Halted != nil || st.State != applier.StateUnavailable || st.Unavailable.Op != applier.OpFetch || st.Unavailable.EventID != "evt-1" {
		t.Fatalf("Status: state %v, halted %+v, unavailable %+v; want unavailable fetching evt-1", st.State, st.Halted, st.Unavailable)
	}
	if hs := persistedHalt(t, db); hs != nil {
		t.Fatalf("persisted halt %+v", hs)
	}
	if err := applier.Skip(ctx, openSecond(t, path), "evt-1"); !errors.Is(err, applier.ErrNotHalted) {
		t.Fatalf("Skip: %v; want ErrNotHalted", err)
	}
	down.Lock()
	failing = false
	down.Unlock()
	if n, err := a.Step(ctx); n != 1 || err != nil {
		t.Fatalf("Step once the store answers = %d, %v", n, err)
	}
}

// A handler error is still a halt: persisted and skippable.
func TestApplier_HandlerErrorIsAHalt(t *testing.T) {
	ctx := context.Background()
	db, path := openDB(t)
	src := &FakeSource{}
	src.Add(ev(1, typ))
	h := newInsertHandler()
	h.FailFunc = func(controlevent.Event) error { return errors.New("tenant quota exceeded") }
	a := newApplier(t, db, src, nil, h, nil)
	if _, err := a.Step(ctx); !errors.Is(err, applier.ErrHalted) {
		t.Fatalf("Step = %v; want ErrHalted", err)
	}
	if st := a.Status(); st.State != applier.StateHalted || st.Unavailable != nil {
		t.Fatalf("state %v, unavailable %+v; want halted", st.State, st.Unavailable)
	}
	if hs := persistedHalt(t, db); hs == nil || hs.EventID != "evt-1" {
		t.Fatalf("persisted halt %+v, want evt-1", hs)
	}
	if err := applier.Skip(ctx, openSecond(t, path), "evt-1"); err != nil {
		t.Fatalf("Skip of a halted event: %v", err)
	}
}

// A halted node whose retry meets an unavailable store stays halted at the
// event (the halt is still persisted and skippable) and reports the
// unavailability beside it; once the store answers, the retry halts again
// or applies.
func TestApplier_HaltOutstandingWhileUnavailable(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	st := artifacttest.NewMemStore()
	src := &FakeSource{}
	src.Add(withArtifact(t, st, ev(1, typ), []byte("payload")))
	h := newInsertHandler()
	broken := true
	h.FailFunc = func(controlevent.Event) error {
		if broken {
			return errors.New("bad payload for this schema")
		}
		return nil
	}
	a := newApplier(t, db, src, st, h, nil)
	if _, err := a.Step(ctx); !errors.Is(err, applier.ErrHalted) {
		t.Fatalf("Step = %v; want ErrHalted", err)
	}
	st.GetFunc = func(context.Context, string) (io.ReadCloser, error) {
		return nil, fmt.Errorf("natsobject: get: %w", feed.ErrUnavailable)
	}
	if _, err := a.Step(ctx); !errors.Is(err, applier.ErrUnavailable) {
		t.Fatalf("Step = %v; want ErrUnavailable", err)
	}
	s := a.Status()
	if s.State != applier.StateUnavailable || s.Halted == nil || s.Halted.Attempts != 1 || s.Unavailable == nil {
		t.Fatalf("state %v, halted %+v, unavailable %+v; want unavailable with the halt outstanding", s.State, s.Halted, s.Unavailable)
	}
	if hs := persistedHalt(t, db); hs == nil || hs.EventID != "evt-1" {
		t.Fatalf("persisted halt %+v; want it kept", hs)
	}
	// The feed has nothing new for a round: still halted, no new attempt.
	src.PollFunc = func(context.Context, uint64) ([]controlevent.Event, error) { return nil, nil }
	if n, err := a.Step(ctx); n != 0 || err != nil {
		t.Fatalf("Step on an empty poll = %d, %v", n, err)
	}
	if s := a.Status(); s.State != applier.StateHalted || s.Halted == nil || s.Halted.Attempts != 1 || s.Unavailable != nil {
		t.Fatalf("state %v, halted %+v, unavailable %+v; want halted, outstanding", s.State, s.Halted, s.Unavailable)
	}
	src.PollFunc = nil
	st.GetFunc = nil
	broken = false
	if n, err := a.Step(ctx); n != 1 || err != nil {
		t.Fatalf("Step once fixed = %d, %v", n, err)
	}
	if s := a.Status(); s.State != applier.StateApplying || s.Halted != nil {
		t.Fatalf("state %v, halted %+v; want applying", s.State, s.Halted)
	}
}

// Run retries a gap with backoff and goes on once the feed delivers the
// missing event.
func TestApplier_RunRetriesGap(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, _ := openDB(t)
	src := newDenseSource(ev(1, typ), ev(3, typ))
	a := newApplier(t, db, src, nil, newInsertHandler(), func(c *applier.Config) {
		c.PollInterval = time.Millisecond
		c.MinBackoff, c.MaxBackoff = time.Millisecond, 4*time.Millisecond
	})
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	waitFor(t, "Run to retry the gap", func() bool { g := a.Status().Gap; return g != nil && g.Attempts >= 3 })
	if c := cursorOf(t, db); c != 1 {
		t.Fatalf("cursor = %d while the gap is open, want 1", c)
	}
	src.mu.Lock()
	src.Events = []controlevent.Event{ev(1, typ), ev(2, typ), ev(3, typ)}
	src.mu.Unlock()
	waitFor(t, "Run to apply past the filled gap", func() bool { return a.Status().Cursor == 3 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if s := a.Status(); s.State != applier.StateApplying || s.Gap != nil || s.Gaps != 1 {
		t.Fatalf("state %v, gap %+v, gaps %d", s.State, s.Gap, s.Gaps)
	}
}

func TestState_String(t *testing.T) {
	for s, want := range map[applier.State]string{
		applier.StateStarting: "starting", applier.StateApplying: "applying", applier.StateHalted: "halted",
		applier.StateUnavailable: "unavailable", applier.StateGap: "gap", applier.StateBehindRetention: "behind_retention",
		applier.State(99): "State(99)",
	} {
		if got := s.String(); got != want {
			t.Errorf("State(%d).String() = %q, want %q", s, got, want)
		}
	}
}
