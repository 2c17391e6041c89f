package applier_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
)

// FakeSource is an in-memory feed.Source and feed.Acker with fault hooks.
// By default Poll returns the stored events after the cursor, in order.
type FakeSource struct {
	mu     sync.Mutex
	Events []controlevent.Event
	// PollFunc, if set, replaces the default Poll.
	PollFunc func(ctx context.Context, since uint64) ([]controlevent.Event, error)
	// AckFunc, if set, runs on every Ack; its error is returned.
	AckFunc func(ctx context.Context, eventID string) error
	// AckThroughFunc, if set, runs on every AckThrough (only on the
	// cumulative wrapper).
	AckThroughFunc func(ctx context.Context, eventID string) error

	Acks        []string // recorded Ack calls
	AcksThrough []string // recorded AckThrough calls
	Polls       int
}

var (
	_ feed.Source = (*FakeSource)(nil)
	_ feed.Acker  = (*FakeSource)(nil)
)

func (s *FakeSource) Name() string { return "fake" }

func (s *FakeSource) Add(evs ...controlevent.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Events = append(s.Events, evs...)
}

func (s *FakeSource) Poll(ctx context.Context, since uint64) ([]controlevent.Event, error) {
	s.mu.Lock()
	s.Polls++
	f := s.PollFunc
	s.mu.Unlock()
	if f != nil {
		return f(ctx, since)
	}
	return s.after(since), nil
}

func (s *FakeSource) after(since uint64) []controlevent.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []controlevent.Event
	for _, e := range s.Events {
		if e.ControlVersion > since {
			out = append(out, e)
		}
	}
	return out
}

func (s *FakeSource) Ack(ctx context.Context, id string) error {
	s.mu.Lock()
	s.Acks = append(s.Acks, id)
	f := s.AckFunc
	s.mu.Unlock()
	if f != nil {
		return f(ctx, id)
	}
	return nil
}

func (s *FakeSource) recorded() (acks, through []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.Acks...), append([]string(nil), s.AcksThrough...)
}

// cumSource adds feed.CumulativeAcker to a FakeSource.
type cumSource struct{ *FakeSource }

var _ feed.CumulativeAcker = cumSource{}

func (s cumSource) AckThrough(ctx context.Context, id string) error {
	s.mu.Lock()
	s.AcksThrough = append(s.AcksThrough, id)
	f := s.AckThroughFunc
	s.mu.Unlock()
	if f != nil {
		return f(ctx, id)
	}
	return nil
}

// headSource adds feed.HeadReporter.
type headSource struct {
	*FakeSource
	head uint64
}

func (s headSource) Head(context.Context) (uint64, error) { return s.head, nil }

// plainSource hides the Acker of a FakeSource.
type plainSource struct{ s *FakeSource }

func (p plainSource) Name() string { return "plain" }
func (p plainSource) Poll(ctx context.Context, since uint64) ([]controlevent.Event, error) {
	return p.s.Poll(ctx, since)
}

// openDB opens a migrated database with a test table "t(id, v)".
func openDB(t testing.TB) (*sql.DB, string) {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "node.db")
	db, err := sqlitedb.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := applier.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE t (id TEXT PRIMARY KEY, v BLOB)`); err != nil {
		t.Fatal(err)
	}
	return db, path
}

// openSecond opens another connection pool on the same file, standing in for
// another process.
func openSecond(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sqlitedb.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// ev returns a valid published event with no artifact.
func ev(cv uint64, typ string) controlevent.Event {
	return controlevent.Event{
		EventID:        fmt.Sprintf("evt-%d", cv),
		Type:           typ,
		Key:            fmt.Sprintf("k%d", cv),
		ControlVersion: cv,
		CreatedAt:      time.Unix(1700000000, 0).UTC(),
	}
}

// evs returns events with control versions from..to.
func evs(from, to uint64, typ string) []controlevent.Event {
	var out []controlevent.Event
	for cv := from; cv <= to; cv++ {
		out = append(out, ev(cv, typ))
	}
	return out
}

// withArtifact stores payload and references it from e.
func withArtifact(t testing.TB, st artifact.Store, e controlevent.Event, payload []byte) controlevent.Event {
	t.Helper()
	ref, err := artifact.PutBytes(context.Background(), st, payload)
	if err != nil {
		t.Fatal(err)
	}
	e.ArtifactRef, e.Checksum = ref, ref
	return e
}

// insertHandler inserts (ev.Key, payload) into t and counts calls per event.
type insertHandler struct {
	mu    sync.Mutex
	calls map[string]int
	// FailFunc, if set, may return an error to fail the event.
	FailFunc func(ev controlevent.Event) error
}

func newInsertHandler() *insertHandler { return &insertHandler{calls: map[string]int{}} }

func (h *insertHandler) handle(ctx context.Context, tx *sql.Tx, ev controlevent.Event, payload []byte) error {
	h.mu.Lock()
	h.calls[ev.EventID]++
	f := h.FailFunc
	h.mu.Unlock()
	if f != nil {
		if err := f(ev); err != nil {
			return err
		}
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO t (id, v) VALUES (?, ?)`, ev.Key, payload)
	return err
}

func (h *insertHandler) count(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls[id]
}

func rowCount(t testing.TB, db *sql.DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func cursorOf(t testing.TB, db *sql.DB) uint64 {
	t.Helper()
	c, err := applier.ReadCursor(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
