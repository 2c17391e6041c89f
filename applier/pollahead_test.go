package applier_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/artifact/artifacttest"
	"github.com/controlfeed/controlfeed/controlevent"
)

// serialSource is a cumulative-acking FakeSource whose Poll returns at most
// limit events and takes a little time, and which records any call made
// while another is in progress: the applier must call a Source from one
// goroutine at a time even when it polls ahead.
type serialSource struct {
	cumSource
	limit   int
	inCall  atomic.Int32
	overlap atomic.Int32
	mu      sync.Mutex
	sinces  []uint64
	// failSince, if non-zero, makes the first Poll after that control
	// version fail.
	failSince uint64
}

func newSerialSource(limit int) *serialSource {
	return &serialSource{cumSource: cumSource{&FakeSource{}}, limit: limit}
}

func (s *serialSource) enter() func() {
	if s.inCall.Add(1) > 1 {
		s.overlap.Add(1)
	}
	return func() { s.inCall.Add(-1) }
}

func (s *serialSource) Poll(ctx context.Context, since uint64) ([]controlevent.Event, error) {
	defer s.enter()()
	time.Sleep(2 * time.Millisecond) // widen the window an overlapping call would hit
	s.mu.Lock()
	s.sinces = append(s.sinces, since)
	fail := s.failSince != 0 && since == s.failSince
	if fail {
		s.failSince = 0
	}
	s.mu.Unlock()
	if fail {
		return nil, fmt.Errorf("poll after %d: %w", since, errFlaky)
	}
	evs, err := s.FakeSource.Poll(ctx, since)
	return evs[:min(len(evs), s.limit)], err
}

func (s *serialSource) AckThrough(ctx context.Context, id string) error {
	defer s.enter()()
	time.Sleep(time.Millisecond)
	return s.cumSource.AckThrough(ctx, id)
}

func (s *serialSource) polledAfter() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sinces)
}

var errFlaky = errors.New("flaky poll")

// A backlog is polled ahead: while batch k commits, the events after it are
// polled (and their payloads fetched), so each Step after the first polls
// nothing itself; the Source is never called concurrently; every event is
// applied once and acknowledged after its commit.
func TestApplier_PollAhead(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	st := artifacttest.NewMemStore()
	src := newSerialSource(8)
	h := newInsertHandler()
	a := newApplier(t, db, src, st, h, func(c *applier.Config) { c.MaxBatch = 8 })
	for cv := uint64(1); cv <= 40; cv++ {
		src.Add(withArtifact(t, st, ev(cv, typ), []byte(fmt.Sprintf("payload %d", cv))))
	}
	for i := range 5 {
		if n, err := a.Step(ctx); n != 8 || err != nil {
			t.Fatalf("Step %d = %d, %v; want 8, nil", i, n, err)
		}
	}
	if got, want := src.polledAfter(), []uint64{0, 8, 16, 24, 32, 40}; !slices.Equal(got, want) {
		t.Errorf("polled after %v, want %v (each next batch polled ahead, once)", got, want)
	}
	if n, err := a.Step(ctx); n != 0 || err != nil {
		t.Fatalf("Step at the head = %d, %v; want 0, nil", n, err)
	}
	if o := src.overlap.Load(); o != 0 {
		t.Errorf("%d Source calls overlapped another; the Source must be called by one goroutine at a time", o)
	}
	if c := cursorOf(t, db); c != 40 {
		t.Errorf("cursor = %d, want 40", c)
	}
	for cv := 1; cv <= 40; cv++ {
		if c := h.count(fmt.Sprintf("evt-%d", cv)); c != 1 {
			t.Errorf("evt-%d applied %d times, want 1", cv, c)
		}
	}
	if _, through := src.recorded(); !slices.Equal(through, []string{"evt-8", "evt-16", "evt-24", "evt-32", "evt-40"}) {
		t.Errorf("acked through %v, want one ack per committed batch", through)
	}
}

// A batch that halts midway drops what was polled ahead of it: the next
// Step polls again from the committed cursor, and nothing is lost or
// applied twice once the handler recovers.
func TestApplier_PollAheadDroppedOnHalt(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	src := newSerialSource(8)
	h := newInsertHandler()
	var failing atomic.Bool
	failing.Store(true)
	h.FailFunc = func(e controlevent.Event) error {
		if e.ControlVersion == 13 && failing.Load() {
			return errors.New("not yet")
		}
		return nil
	}
	a := newApplier(t, db, src, nil, h, func(c *applier.Config) { c.MaxBatch = 8 })
	src.Add(evs(1, 24, typ)...)
	if n, err := a.Step(ctx); n != 8 || err != nil {
		t.Fatalf("Step 1 = %d, %v; want 8, nil", n, err)
	}
	if n, err := a.Step(ctx); n != 4 || !errors.Is(err, applier.ErrHalted) {
		t.Fatalf("Step 2 = %d, %v; want 4 and ErrHalted at control version 13", n, err)
	}
	failing.Store(false)
	for a.Status().Cursor < 24 {
		if _, err := a.Step(ctx); err != nil {
			t.Fatalf("Step after the handler recovered: %v", err)
		}
	}
	got := src.polledAfter()
	if !slices.Contains(got, 12) {
		t.Errorf("polled after %v; want a Poll after 12, the cursor the halted batch committed", got)
	}
	if o := src.overlap.Load(); o != 0 {
		t.Errorf("%d Source calls overlapped another", o)
	}
	for cv := 1; cv <= 24; cv++ {
		if c, want := h.count(fmt.Sprintf("evt-%d", cv)), 1; c < want {
			t.Errorf("evt-%d ran %d times, want at least once", cv, c)
		}
	}
	if n := rowCount(t, db, `SELECT COUNT(*) FROM t`); n != 24 {
		t.Errorf("%d rows applied, want 24 (each event once)", n)
	}
}

// A Poll made ahead that fails is dropped: the Step that made it still
// succeeds, and the next Step polls again itself from the cursor.
func TestApplier_PollAheadError(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	src := newSerialSource(8)
	src.failSince = 8
	h := newInsertHandler()
	a := newApplier(t, db, src, nil, h, func(c *applier.Config) { c.MaxBatch = 8 })
	src.Add(evs(1, 16, typ)...)
	if n, err := a.Step(ctx); n != 8 || err != nil {
		t.Fatalf("Step 1 = %d, %v; want 8, nil (the failing Poll was made ahead)", n, err)
	}
	if n, err := a.Step(ctx); n != 8 || err != nil {
		t.Fatalf("Step 2 = %d, %v; want 8, nil (polled again itself)", n, err)
	}
	if got, want := src.polledAfter()[:3], []uint64{0, 8, 8}; !slices.Equal(got, want) {
		t.Errorf("polled after %v, want %v first", got, want)
	}
	if c := cursorOf(t, db); c != 16 {
		t.Errorf("cursor = %d, want 16", c)
	}
}

// Under Run (a pinned write connection, background checkpoints) polling
// ahead keeps the Source's calls serial, no position is polled twice
// (every result polled ahead is used), each event is applied once, and the
// last event is acknowledged.
func TestApplier_RunPollAhead(t *testing.T) {
	db, _ := openDB(t)
	st := artifacttest.NewMemStore()
	src := newSerialSource(8)
	h := newInsertHandler()
	a := newApplier(t, db, src, st, h, func(c *applier.Config) {
		c.MaxBatch = 4
		c.PollInterval = time.Millisecond
	})
	const n = 100
	for cv := uint64(1); cv <= n; cv++ {
		src.Add(withArtifact(t, st, ev(cv, typ), []byte(fmt.Sprintf("payload %d", cv))))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	deadline := time.Now().Add(60 * time.Second) // a hang guard, not a speed assertion
	for {
		_, through := src.recorded()
		if a.Status().Cursor == n && len(through) > 0 && through[len(through)-1] == fmt.Sprintf("evt-%d", n) {
			break
		}
		if st := a.Status(); st.Halted != nil || time.Now().After(deadline) {
			cancel()
			t.Fatalf("Run did not apply and acknowledge through %d: %+v, acked through %v", n, st, through)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if o := src.overlap.Load(); o != 0 {
		t.Errorf("%d Source calls overlapped another; the Source must be called by one goroutine at a time", o)
	}
	sinces := src.polledAfter()
	for i := 1; i < len(sinces); i++ {
		if sinces[i] < sinces[i-1] || (sinces[i] == sinces[i-1] && sinces[i] != n) {
			t.Errorf("polled after %v: position %d polled again before the head", sinces, sinces[i])
			break
		}
	}
	for cv := 1; cv <= n; cv++ {
		if c := h.count(fmt.Sprintf("evt-%d", cv)); c != 1 {
			t.Errorf("evt-%d applied %d times, want 1", cv, c)
		}
	}
	if c := cursorOf(t, db); c != n {
		t.Errorf("cursor = %d, want %d", c, n)
	}
}
