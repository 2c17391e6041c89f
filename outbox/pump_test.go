package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/nop"
	"github.com/controlfeed/controlfeed/outbox"
)

// hang is how long a test waits on a channel before declaring the code under
// test stuck. It is a deadlock guard, not a performance assertion.
const hang = 30 * time.Second

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(hang):
		t.Fatalf("stuck waiting for %s", what)
		panic("unreachable")
	}
}

func newPump(t *testing.T, db *sql.DB, sink feed.Sink, cfg *outbox.Config) *outbox.Pump {
	t.Helper()
	p, err := outbox.NewPump(db, sink, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func pending(t *testing.T, db *sql.DB) []outbox.Row {
	t.Helper()
	rows, err := outbox.ListPending(context.Background(), db, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// published returns event_id -> published ControlVersion of every published row.
func published(t *testing.T, db *sql.DB) map[string]uint64 {
	t.Helper()
	rows, err := db.Query(`SELECT event_id, published_control_version FROM controlfeed_outbox WHERE published_control_version IS NOT NULL`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	m := map[string]uint64{}
	for rows.Next() {
		var id string
		var cv uint64
		if err := rows.Scan(&id, &cv); err != nil {
			t.Fatal(err)
		}
		m[id] = cv
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

func ids(events []controlevent.Event) string {
	s := make([]string, len(events))
	for i, e := range events {
		s[i] = e.EventID
	}
	return strings.Join(s, ",")
}

func TestNewPump(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		db, _ := tdb.Open(t)
		for _, tc := range []struct {
			name string
			db   *sql.DB
			sink feed.Sink
			cfg  *outbox.Config
		}{
			{"ErrNilDB", nil, &FakeSink{}, nil},
			{"ErrNilSink", db, nil, nil},
			{"ErrNopSink", db, nop.Sink{}, nil},
			{"ErrNegativeBatch", db, &FakeSink{}, &outbox.Config{BatchSize: -1}},
			{"ErrBackoffOrder", db, &FakeSink{}, &outbox.Config{MinBackoff: time.Minute}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if _, err := outbox.NewPump(tc.db, tc.sink, tc.cfg); err == nil {
					t.Fatal("NewPump succeeded")
				}
			})
		}
		if _, err := outbox.NewPump(db, &FakeSink{}, &outbox.Config{}); err != nil {
			t.Fatalf("zero Config: %v", err)
		}
	})
}

// sinkKinds runs a test against a plain Sink and a BatchAppender, both
// failing while fail() says so for an event.
var sinkKinds = []struct {
	name string
	make func(fail func(controlevent.Event) error) (feed.Sink, *FakeSink)
}{
	{"Append", func(fail func(controlevent.Event) error) (feed.Sink, *FakeSink) {
		s := &FakeSink{}
		s.AppendFunc = func(ctx context.Context, e controlevent.Event) (controlevent.Event, error) {
			if err := fail(e); err != nil {
				return e, err
			}
			return s.Stamp(e)
		}
		return s, s
	}},
	{"AppendBatch", func(fail func(controlevent.Event) error) (feed.Sink, *FakeSink) {
		s := &FakeBatchSink{}
		s.AppendBatchFunc = func(ctx context.Context, events []controlevent.Event) ([]controlevent.Event, error) {
			var out []controlevent.Event
			for _, e := range events {
				if err := fail(e); err != nil {
					return out, err
				}
				got, err := s.Stamp(e)
				if err != nil {
					return out, err
				}
				out = append(out, got)
			}
			return out, nil
		}
		return s, &s.FakeSink
	}},
}

func TestPump_FailureStopsLaterRows(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		for _, kind := range sinkKinds {
			t.Run(kind.name, func(t *testing.T) {
				ctx := context.Background()
				db, _ := tdb.Open(t)
				for i := 1; i <= 5; i++ {
					appendCommitted(t, db, newEvent(i))
				}
				var broken atomic.Bool
				broken.Store(true)
				sink, fake := kind.make(func(e controlevent.Event) error {
					if e.EventID == "evt-0003" && broken.Load() {
						return errors.New("broker unavailable")
					}
					return nil
				})
				p := newPump(t, db, sink, nil)

				for attempt := 1; attempt <= 2; attempt++ {
					n, err := p.Pass(ctx)
					if err == nil || !strings.Contains(err.Error(), "broker unavailable") || !strings.Contains(err.Error(), "evt-0003") {
						t.Fatalf("Pass %d error = %v, want the sink's error naming evt-0003", attempt, err)
					}
					if attempt == 1 && n != 2 {
						t.Fatalf("Pass 1 published %d, want 2", n)
					}
					if attempt == 2 && n != 0 {
						t.Fatalf("Pass 2 published %d, want 0", n)
					}
					rows := pending(t, db)
					if len(rows) != 3 || rows[0].Event.EventID != "evt-0003" {
						t.Fatalf("pending after pass %d: %d rows starting %+v, want evt-0003..5", attempt, len(rows), rows)
					}
					r := rows[0]
					if r.AttemptCount != attempt || !strings.Contains(r.LastError, "broker unavailable") || r.LastAttemptAt.IsZero() {
						t.Fatalf("row 3 after pass %d: attempts %d, last_error %q, last_attempt_at %v", attempt, r.AttemptCount, r.LastError, r.LastAttemptAt)
					}
					for _, later := range rows[1:] {
						if later.AttemptCount != 0 || later.LastError != "" {
							t.Fatalf("row %s was attempted: %+v", later.Event.EventID, later)
						}
					}
					if got := ids(fake.Feed()); got != "evt-0001,evt-0002" {
						t.Fatalf("feed %s, want only evt-0001,evt-0002 before evt-0003 succeeds", got)
					}
					if kind.name == "Append" {
						for _, e := range fake.Calls() {
							if e.EventID == "evt-0004" || e.EventID == "evt-0005" {
								t.Fatalf("%s reached the sink before evt-0003 was published; calls %s", e.EventID, ids(fake.Calls()))
							}
						}
					}
				}
				st := p.Stats()
				if st.Failures != 2 || !strings.Contains(st.LastError, "broker unavailable") || st.Published != 2 {
					t.Fatalf("Stats = %+v, want 2 failures, 2 published", st)
				}

				broken.Store(false)
				if n, err := p.Pass(ctx); err != nil || n != 3 {
					t.Fatalf("Pass after repair = %d, %v; want 3, nil", n, err)
				}
				if got, want := ids(fake.Feed()), "evt-0001,evt-0002,evt-0003,evt-0004,evt-0005"; got != want {
					t.Fatalf("feed order %s, want %s", got, want)
				}
				pub := published(t, db)
				for i := 1; i <= 5; i++ {
					if cv := pub[fmt.Sprintf("evt-%04d", i)]; cv != uint64(i) {
						t.Errorf("evt-%04d published as %d, want %d", i, cv, i)
					}
				}
				if c := readCounts(t, db); c.Pending != 0 || c.Published != 5 {
					t.Fatalf("counts %+v", c)
				}
			})
		}
	})
}

func TestPump_RunRetriesInOrder(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		db, _ := tdb.Open(t)
		for i := 1; i <= 5; i++ {
			appendCommitted(t, db, newEvent(i))
		}
		var fails atomic.Int32
		done := make(chan struct{})
		sink := &FakeSink{}
		sink.AppendFunc = func(ctx context.Context, e controlevent.Event) (controlevent.Event, error) {
			if e.EventID == "evt-0003" && fails.Add(1) <= 3 {
				return e, errors.New("transient")
			}
			got, err := sink.Stamp(e)
			if e.EventID == "evt-0005" {
				close(done)
			}
			return got, err
		}
		p := newPump(t, db, sink, &outbox.Config{MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, PollInterval: time.Hour})
		runErr := make(chan error, 1)
		go func() { runErr <- p.Run(ctx) }()
		recv(t, done, "evt-0005 to be published")
		cancel()
		if err := recv(t, runErr, "Run to return"); err != nil {
			t.Fatalf("Run = %v", err)
		}
		var order []string
		for _, e := range sink.Calls() {
			order = append(order, e.EventID)
		}
		want := "evt-0001,evt-0002,evt-0003,evt-0003,evt-0003,evt-0003,evt-0004,evt-0005"
		if got := strings.Join(order, ","); got != want {
			t.Fatalf("sink calls %s, want %s", got, want)
		}
		if st := p.Stats(); st.Failures != 3 || st.Retrying || st.Published != 5 {
			t.Fatalf("Stats = %+v, want 3 failures, not retrying, 5 published", st)
		}
		if pub := published(t, db); pub["evt-0005"] != 5 {
			t.Fatalf("published %v", pub)
		}
	})
}

func TestPump_DeadRows(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		ctx := context.Background()
		db, _ := tdb.Open(t)
		appendCommitted(t, db, newEvent(1))
		insertRaw := func(eventID, payload string) {
			t.Helper()
			if _, err := db.Exec(`INSERT INTO controlfeed_outbox (event_id, type, payload_json, created_at) VALUES ($1, 'kv.put', $2, '2026-11-27T10:00:00.000000000Z')`, eventID, payload); err != nil {
				t.Fatal(err)
			}
		}
		insertRaw("evt-0002", `{"event_id":"evt-0002","type":`) // truncated JSON
		appendCommitted(t, db, newEvent(3))
		other, _ := controlevent.Marshal(newEvent(99))
		insertRaw("evt-0004", string(other)) // payload names another event
		stamped := newEvent(5)
		stamped.ControlVersion = 12
		b, _ := controlevent.Marshal(stamped)
		insertRaw("evt-0005", string(b)) // fails ValidateUnpublished
		appendCommitted(t, db, newEvent(6))

		sink := &FakeSink{}
		p := newPump(t, db, sink, &outbox.Config{BatchSize: 2}) // dead rows span chunks
		n, err := p.Pass(ctx)
		if err != nil || n != 3 {
			t.Fatalf("Pass = %d, %v; want 3, nil", n, err)
		}
		if got, want := ids(sink.Feed()), "evt-0001,evt-0003,evt-0006"; got != want {
			t.Fatalf("feed %s, want %s", got, want)
		}
		dead, err := outbox.ListDead(ctx, db, 0)
		if err != nil {
			t.Fatal(err)
		}
		wantReason := map[string]string{"evt-0002": "payload_json", "evt-0004": "evt-0099", "evt-0005": "control_version"}
		if len(dead) != len(wantReason) {
			t.Fatalf("ListDead = %+v, want %d rows", dead, len(wantReason))
		}
		for _, r := range dead {
			if !strings.Contains(r.DeadReason, wantReason[r.Event.EventID]) || r.DeadAt.IsZero() {
				t.Errorf("dead row %s: reason %q, dead_at %v; want a reason mentioning %q", r.Event.EventID, r.DeadReason, r.DeadAt, wantReason[r.Event.EventID])
			}
		}
		if st := p.Stats(); st.Dead != 3 || st.Published != 3 {
			t.Fatalf("Stats = %+v", st)
		}
		if c := readCounts(t, db); c.Pending != 0 || c.Dead != 3 || c.Published != 3 {
			t.Fatalf("counts %+v", c)
		}
		// A second pass finds nothing: dead rows are not retried.
		if n, err := p.Pass(ctx); err != nil || n != 0 || len(sink.Calls()) != 3 {
			t.Fatalf("second Pass = %d, %v, %d calls", n, err, len(sink.Calls()))
		}
	})
}

func TestPump_SinkContract(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		for _, tc := range []struct {
			name  string
			stamp func(e controlevent.Event, call int) controlevent.Event
		}{
			{"ErrZeroControlVersion", func(e controlevent.Event, _ int) controlevent.Event { return e }},
			{"ErrOtherEventID", func(e controlevent.Event, call int) controlevent.Event {
				e.ControlVersion = uint64(call)
				if call == 2 {
					e.EventID = "someone-else"
				}
				return e
			}},
			{"ErrBackwards", func(e controlevent.Event, call int) controlevent.Event {
				e.ControlVersion = uint64(10 - call) // 9, then 8
				return e
			}},
			{"ErrTooLarge", func(e controlevent.Event, call int) controlevent.Event {
				e.ControlVersion = 1 << 63
				return e
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ctx := context.Background()
				db, _ := tdb.Open(t)
				appendCommitted(t, db, newEvent(1), newEvent(2))
				var calls int
				sink := &FakeSink{AppendFunc: func(ctx context.Context, e controlevent.Event) (controlevent.Event, error) {
					calls++
					return tc.stamp(e, calls), nil
				}}
				p := newPump(t, db, sink, nil)
				_, err := p.Pass(ctx)
				if !errors.Is(err, outbox.ErrSinkContract) {
					t.Fatalf("Pass = %v, want ErrSinkContract", err)
				}
				rows := pending(t, db)
				if len(rows) == 0 {
					t.Fatal("no row left pending")
				}
				if r := rows[0]; r.AttemptCount != 1 || r.LastError == "" {
					t.Fatalf("the offending row %s: attempts %d, last_error %q", r.Event.EventID, r.AttemptCount, r.LastError)
				}
			})
		}
		t.Run("ErrBatchTooLong", func(t *testing.T) {
			db, _ := tdb.Open(t)
			appendCommitted(t, db, newEvent(1))
			sink := &FakeBatchSink{}
			sink.AppendBatchFunc = func(ctx context.Context, events []controlevent.Event) ([]controlevent.Event, error) {
				a, _ := sink.Stamp(events[0])
				b, _ := sink.Stamp(newEvent(2))
				return []controlevent.Event{a, b}, nil
			}
			if _, err := newPump(t, db, sink, nil).Pass(context.Background()); !errors.Is(err, outbox.ErrSinkContract) {
				t.Fatalf("Pass = %v, want ErrSinkContract", err)
			}
		})
		t.Run("ErrBatchShortWithoutError", func(t *testing.T) {
			db, _ := tdb.Open(t)
			appendCommitted(t, db, newEvent(1), newEvent(2))
			sink := &FakeBatchSink{}
			sink.AppendBatchFunc = func(ctx context.Context, events []controlevent.Event) ([]controlevent.Event, error) {
				a, _ := sink.Stamp(events[0])
				return []controlevent.Event{a}, nil
			}
			n, err := newPump(t, db, sink, nil).Pass(context.Background())
			if !errors.Is(err, outbox.ErrSinkContract) || n != 1 {
				t.Fatalf("Pass = %d, %v; want 1 and ErrSinkContract", n, err)
			}
			if rows := pending(t, db); len(rows) != 1 || rows[0].Event.EventID != "evt-0002" || rows[0].AttemptCount != 1 {
				t.Fatalf("pending %+v, want evt-0002 with one attempt", rows)
			}
		})
	})
}

// A BatchAppender that returns every event stamped and an error breaks its
// contract; the pump must not panic, must record the stamped rows as
// published (they are in the feed) and report the breach.
func TestPump_BatchEveryEventAndError(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		db, _ := tdb.Open(t)
		appendCommitted(t, db, newEvent(1), newEvent(2))
		boom := errors.New("boom")
		sink := &FakeBatchSink{}
		sink.AppendBatchFunc = func(ctx context.Context, events []controlevent.Event) ([]controlevent.Event, error) {
			out := make([]controlevent.Event, len(events))
			for i, e := range events {
				out[i], _ = sink.Stamp(e)
			}
			return out, boom
		}
		n, err := newPump(t, db, sink, nil).Pass(context.Background())
		if !errors.Is(err, outbox.ErrSinkContract) || !errors.Is(err, boom) || n != 2 {
			t.Fatalf("Pass = %d, %v; want 2 and an error wrapping ErrSinkContract and the sink's error", n, err)
		}
		if rows := pending(t, db); len(rows) != 0 {
			t.Fatalf("pending %+v, want none", rows)
		}
		if got := published(t, db); got["evt-0001"] != 1 || got["evt-0002"] != 2 {
			t.Fatalf("published %v, want evt-0001 at 1 and evt-0002 at 2", got)
		}
	})
}

func TestPump_NotifyWakesRun(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		db, _ := tdb.Open(t)
		got := make(chan string, 10)
		sink := &FakeSink{}
		sink.AppendFunc = func(ctx context.Context, e controlevent.Event) (controlevent.Event, error) {
			defer func() { got <- e.EventID }()
			return sink.Stamp(e)
		}
		// PollInterval is far longer than the test's deadlock guard: only Notify
		// (or the pass at start) can make the pump publish.
		p := newPump(t, db, sink, &outbox.Config{PollInterval: 24 * time.Hour})
		appendCommitted(t, db, newEvent(1))
		runErr := make(chan error, 1)
		go func() { runErr <- p.Run(ctx) }()
		if id := recv(t, got, "the pass at start"); id != "evt-0001" {
			t.Fatalf("first publish %s", id)
		}
		for i := 2; i <= 4; i++ {
			appendCommitted(t, db, newEvent(i))
			p.Notify()
			if id, want := recv(t, got, "a publish after Notify"), fmt.Sprintf("evt-%04d", i); id != want {
				t.Fatalf("published %s, want %s", id, want)
			}
		}
		cancel()
		if err := recv(t, runErr, "Run to return"); err != nil {
			t.Fatal(err)
		}
		// Notify never blocks, running or not.
		for range 100 {
			p.Notify()
		}
	})
}

func TestPump_PollFindsRowsFromAnotherProcess(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		db, reopen := tdb.Open(t)
		other := reopen(t) // another process's connection pool
		got := make(chan string, 10)
		sink := &FakeSink{}
		sink.AppendFunc = func(ctx context.Context, e controlevent.Event) (controlevent.Event, error) {
			defer func() { got <- e.EventID }()
			return sink.Stamp(e)
		}
		p := newPump(t, db, sink, &outbox.Config{PollInterval: 5 * time.Millisecond})
		runErr := make(chan error, 1)
		go func() { runErr <- p.Run(ctx) }()
		appendCommitted(t, other, newEvent(1), newEvent(2))
		if a, b := recv(t, got, "first row"), recv(t, got, "second row"); a != "evt-0001" || b != "evt-0002" {
			t.Fatalf("published %s, %s", a, b)
		}
		cancel()
		if err := recv(t, runErr, "Run to return"); err != nil {
			t.Fatal(err)
		}
		if pub := published(t, other); len(pub) != 2 {
			t.Fatalf("published rows seen by the other process: %v", pub)
		}
	})
}

func TestPump_CleanShutdownFinishesInFlight(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		for _, kind := range []string{"Append", "AppendBatch"} {
			t.Run(kind, func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				db, _ := tdb.Open(t)
				appendCommitted(t, db, newEvent(1), newEvent(2))
				entered := make(chan struct{}, 1)
				release := make(chan struct{})
				var ctxErrInSink atomic.Value
				block := func(sctx context.Context) {
					select {
					case entered <- struct{}{}:
					default:
					}
					<-release
					ctxErrInSink.Store(fmt.Sprint(sctx.Err()))
				}
				var sink feed.Sink
				fake := &FakeSink{}
				if kind == "Append" {
					fake.AppendFunc = func(sctx context.Context, e controlevent.Event) (controlevent.Event, error) {
						if e.EventID == "evt-0001" {
							block(sctx)
						}
						return fake.Stamp(e)
					}
					sink = fake
				} else {
					bs := &FakeBatchSink{}
					bs.AppendBatchFunc = func(sctx context.Context, events []controlevent.Event) ([]controlevent.Event, error) {
						block(sctx)
						a, _ := bs.Stamp(events[0])
						return []controlevent.Event{a}, errors.New("second event interrupted")
					}
					fake, sink = &bs.FakeSink, bs
				}
				p := newPump(t, db, sink, &outbox.Config{PollInterval: time.Hour})
				runErr := make(chan error, 1)
				go func() { runErr <- p.Run(ctx) }()
				recv(t, entered, "the publish to start")
				cancel()
				select {
				case err := <-runErr:
					t.Fatalf("Run returned %v with a publish in flight", err)
				default:
				}
				close(release)
				if err := recv(t, runErr, "Run to return"); err != nil {
					t.Fatalf("Run = %v, want nil after a clean stop", err)
				}
				if s := ctxErrInSink.Load(); s != "<nil>" {
					t.Fatalf("the in-flight publish saw ctx error %v", s)
				}
				if pub := published(t, db); pub["evt-0001"] != 1 {
					t.Fatalf("in-flight event not written back: %v", pub)
				}
				if rows := pending(t, db); len(rows) != 1 || rows[0].Event.EventID != "evt-0002" {
					t.Fatalf("pending %+v, want evt-0002 left for later", rows)
				}
				if kind == "Append" && len(fake.Calls()) != 1 {
					t.Fatalf("a new publish started after stop: calls %s", ids(fake.Calls()))
				}
			})
		}
	})
}

func TestPump_ShutdownTimeout(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		db, _ := tdb.Open(t)
		appendCommitted(t, db, newEvent(1))
		entered := make(chan struct{})
		sink := &FakeSink{AppendFunc: func(sctx context.Context, e controlevent.Event) (controlevent.Event, error) {
			close(entered)
			<-sctx.Done() // a broker that never answers
			return e, sctx.Err()
		}}
		p := newPump(t, db, sink, &outbox.Config{ShutdownTimeout: time.Millisecond})
		runErr := make(chan error, 1)
		go func() { runErr <- p.Run(ctx) }()
		recv(t, entered, "the publish to start")
		cancel()
		if err := recv(t, runErr, "Run to return"); err == nil || !strings.Contains(err.Error(), "ShutdownTimeout") {
			t.Fatalf("Run = %v, want the shutdown timeout error", err)
		}
		if rows := pending(t, db); len(rows) != 1 {
			t.Fatalf("pending %+v, want the row kept", rows)
		}
	})
}

func TestPump_RepublishAfterLostWriteBack(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		db, _ := tdb.Open(t)
		appendCommitted(t, db, newEvent(1), newEvent(2))
		sink := &FakeSink{}
		// The "crash": the broker accepts evt-0001, then the pump's context dies
		// before the write-back can commit.
		crashCtx, crash := context.WithCancel(context.Background())
		sink.AppendFunc = func(ctx context.Context, e controlevent.Event) (controlevent.Event, error) {
			got, err := sink.Stamp(e)
			crash()
			return got, err
		}
		p := newPump(t, db, sink, nil)
		if n, err := p.Pass(crashCtx); err == nil || n != 0 {
			t.Fatalf("Pass = %d, %v; want 0 and an error", n, err)
		}
		if rows := pending(t, db); len(rows) != 2 {
			t.Fatalf("pending %d rows, want both (the write-back was lost)", len(rows))
		}

		// Restart: a new pump on the same database and broker.
		sink.AppendFunc = nil
		p2 := newPump(t, db, sink, nil)
		if n, err := p2.Pass(context.Background()); err != nil || n != 2 {
			t.Fatalf("Pass after restart = %d, %v; want 2, nil", n, err)
		}
		if got, want := ids(sink.Calls()), "evt-0001,evt-0001,evt-0002"; got != want {
			t.Fatalf("sink calls %s, want %s (the republish reuses the EventID)", got, want)
		}
		if got, want := ids(sink.Feed()), "evt-0001,evt-0002"; got != want {
			t.Fatalf("feed %s, want %s: dedup absorbs the republish", got, want)
		}
		if pub := published(t, db); pub["evt-0001"] != 1 || pub["evt-0002"] != 2 {
			t.Fatalf("published %v, want evt-0001=1 evt-0002=2", pub)
		}
	})
}

func TestPump_RunTwice(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		db, _ := tdb.Open(t)
		appendCommitted(t, db, newEvent(1))
		got := make(chan struct{}, 1)
		sink := &FakeSink{}
		sink.AppendFunc = func(ctx context.Context, e controlevent.Event) (controlevent.Event, error) {
			defer func() { got <- struct{}{} }()
			return sink.Stamp(e)
		}
		p := newPump(t, db, sink, &outbox.Config{PollInterval: time.Hour})
		runErr := make(chan error, 1)
		go func() { runErr <- p.Run(ctx) }()
		recv(t, got, "the first Run to publish")
		if err := p.Run(ctx); err == nil {
			t.Fatal("a second concurrent Run succeeded")
		}
		cancel()
		if err := recv(t, runErr, "Run to return"); err != nil {
			t.Fatal(err)
		}
	})
}

// recoverSink is a FakeSink that implements feed.Recoverer: Recover closes
// the current channel, as a backend does when its broker comes back.
type recoverSink struct {
	FakeSink
	rmu sync.Mutex
	ch  chan struct{}
}

var _ feed.Recoverer = (*recoverSink)(nil)

func (s *recoverSink) Recovered() <-chan struct{} {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *recoverSink) Recover() {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if s.ch != nil {
		close(s.ch)
	}
	s.ch = make(chan struct{})
}

// A failed pass waits out its backoff unless the sink reports that its
// broker came back: then Run retries at once and the backoff starts over.
// With an hour of backoff, only the recovery can get the row published.
func TestPump_RecoveryRetriesAtOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, _ := openDB(t)
	appendCommitted(t, db, newEvent(1))
	var down atomic.Bool
	down.Store(true)
	failed := make(chan struct{}, 10)
	sink := &recoverSink{}
	sink.AppendFunc = func(ctx context.Context, e controlevent.Event) (controlevent.Event, error) {
		if down.Load() {
			failed <- struct{}{}
			return e, errors.New("no quorum")
		}
		return sink.Stamp(e)
	}
	p := newPump(t, db, sink, &outbox.Config{MinBackoff: time.Hour, MaxBackoff: time.Hour, PollInterval: time.Hour})
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(ctx) }()
	recv(t, failed, "the first publish to fail")
	for !p.Stats().Retrying {
		time.Sleep(time.Millisecond)
	}
	down.Store(false)
	sink.Recover()
	deadline := time.Now().Add(hang)
	for len(published(t, db)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the row was not published after the sink recovered (Stats %+v)", p.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	for p.Stats().Retrying {
		if time.Now().After(deadline) {
			t.Fatalf("Stats still retrying after the publish: %+v", p.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := recv(t, runErr, "Run to return"); err != nil {
		t.Fatalf("Run = %v", err)
	}
}
