package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/outbox"
)

// counterSink stamps a counter: the cheapest possible broker, so the
// benchmark measures the pump and SQLite.
type counterSink struct{ n atomic.Uint64 }

func (s *counterSink) Name() string { return "counter" }
func (s *counterSink) Append(_ context.Context, e controlevent.Event) (controlevent.Event, error) {
	e.ControlVersion = s.n.Add(1)
	return e, nil
}

type counterBatchSink struct{ counterSink }

func (s *counterBatchSink) AppendBatch(_ context.Context, events []controlevent.Event) ([]controlevent.Event, error) {
	out := make([]controlevent.Event, len(events))
	for i, e := range events {
		e.ControlVersion = s.n.Add(1)
		out[i] = e
	}
	return out, nil
}

// BenchmarkPump_Pass publishes 10k pending rows per iteration and reports
// events/s. The rows are reset to pending (outside the timer) between
// iterations.
func BenchmarkPump_Pass(b *testing.B) {
	const rows = 10_000
	for _, tc := range []struct {
		name string
		sink feed.Sink
	}{
		{"Append", &counterSink{}},
		{"AppendBatch", &counterBatchSink{}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			db, _ := openDB(b)
			fill(b, db, rows)
			p, err := outbox.NewPump(db, tc.sink, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i > 0 {
					b.StopTimer()
					if _, err := db.Exec(`UPDATE controlfeed_outbox SET published_control_version = NULL, published_at = NULL`); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
				n, err := p.Pass(ctx)
				if err != nil || n != rows {
					b.Fatalf("Pass = %d, %v; want %d", n, err, rows)
				}
			}
			b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkAppend measures Append + commit, one event per transaction.
func BenchmarkAppend(b *testing.B) {
	ctx := context.Background()
	db, _ := openDB(b)
	base := newEvent(1)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e := base
		e.EventID = fmt.Sprintf("bench-%d", i)
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := outbox.Append(ctx, tx, e); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// fill appends n events in one transaction.
func fill(b *testing.B, db *sql.DB, n int) {
	b.Helper()
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Rollback()
	for i := 1; i <= n; i++ {
		if err := outbox.Append(ctx, tx, newEvent(i)); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkDurability compares the two ways to keep "durable before
// published" (see the Pump's doc): synchronous=FULL, one fsync inside every
// producer commit, against the default, synchronous=NORMAL commits and one
// fsync of the WAL per chunk the pump reads before publishing it.
//
//   - commit: one Append + commit, what a producer's transaction pays;
//   - commit+pass: that, then a pump pass publishing it (a steady trickle,
//     one fsync per event either way);
//   - parallel-commits: 2 x GOMAXPROCS goroutines commit while the pump runs, the
//     producer's throughput.
func BenchmarkDurability(b *testing.B) {
	for _, mode := range []string{"full-commit", "wal-sync-before-publish"} {
		setup := func(b *testing.B) (*sql.DB, *outbox.Pump) {
			db, _ := openDB(b)
			if mode == "full-commit" {
				db.SetMaxOpenConns(1) // the pragma is per connection
				if _, err := db.Exec("PRAGMA synchronous=FULL"); err != nil {
					b.Fatal(err)
				}
				outbox.SetSyncFile(b, func(func(string) error, string) error { return nil })
			}
			p, err := outbox.NewPump(db, &FakeSink{}, nil)
			if err != nil {
				b.Fatal(err)
			}
			return db, p
		}
		commit := func(b *testing.B, db *sql.DB, id string) {
			e := newEvent(1)
			e.EventID = id
			tx, err := db.BeginTx(context.Background(), nil)
			if err != nil {
				b.Fatal(err)
			}
			if err := outbox.Append(context.Background(), tx, e); err != nil {
				b.Fatal(err)
			}
			if err := tx.Commit(); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(mode+"/commit", func(b *testing.B) {
			db, _ := setup(b)
			for i := 0; b.Loop(); i++ {
				commit(b, db, fmt.Sprintf("c-%d", i))
			}
		})
		b.Run(mode+"/commit+pass", func(b *testing.B) {
			db, p := setup(b)
			for i := 0; b.Loop(); i++ {
				commit(b, db, fmt.Sprintf("c-%d", i))
				if _, err := p.Pass(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(mode+"/parallel-commits", func(b *testing.B) {
			db, p := setup(b)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); p.Run(ctx) }()
			var n atomic.Int64
			b.SetParallelism(2) // 2 x GOMAXPROCS writers
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					commit(b, db, fmt.Sprintf("p-%d", n.Add(1)))
					p.Notify()
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
			cancel()
			<-done
		})
	}
}
