package applier_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/trust"
)

const benchEvents = 10_000

// metricsModes runs a benchmark without and with Config.Registerer, so the
// cost of the histograms shows in one run (compare the two with benchstat).
var metricsModes = []struct {
	name string
	mod  func(*applier.Config)
}{
	{"metrics=off", nil},
	{"metrics=on", func(c *applier.Config) { c.Registerer = prometheus.NewRegistry() }},
}

// BenchmarkApplier_CatchUp applies 10k pre-filled events (insert handler, no
// artifacts) from a fake source with the default MaxBatch. Compare events/s
// with BenchmarkRawSQLiteInsert100, the same rows inserted raw.
func BenchmarkApplier_CatchUp(b *testing.B) {
	for _, m := range metricsModes {
		b.Run(m.name, func(b *testing.B) { benchCatchUp(b, m.mod) })
	}
}

func benchCatchUp(b *testing.B, mod func(*applier.Config)) {
	benchCatchUpOf(b, evs(1, benchEvents, typ), mod)
}

// benchCatchUpOf times a fresh applier draining all (benchEvents events).
func benchCatchUpOf(b *testing.B, all []controlevent.Event, mod func(*applier.Config)) {
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		db, _ := openDB(b)
		src := &FakeSource{Events: all}
		a := newApplier(b, db, src, nil, newInsertHandler(), mod)
		b.StartTimer()
		for {
			n, err := a.Step(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if n == 0 {
				break
			}
		}
		b.StopTimer()
		if c := cursorOf(b, db); c != benchEvents {
			b.Fatalf("cursor = %d", c)
		}
		db.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(benchEvents*b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkRawSQLiteInsert100 inserts the same 10k rows the catch-up
// benchmark's handler writes, plus nothing else, in 100-row transactions: the
// floor the applier's bookkeeping is measured against.
func BenchmarkRawSQLiteInsert100(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		db, _ := openDB(b)
		b.StartTimer()
		for i := 0; i < benchEvents; i += 100 {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			for j := i; j < i+100; j++ {
				if _, err := tx.ExecContext(ctx, `INSERT INTO t (id, v) VALUES (?, ?)`, fmt.Sprintf("k%d", j+1), nil); err != nil {
					b.Fatal(err)
				}
			}
			if err := tx.Commit(); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		db.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(benchEvents*b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkApplier_SteadyState applies one event per Step (one transaction
// per event), the latency path.
func BenchmarkApplier_SteadyState(b *testing.B) {
	for _, m := range metricsModes {
		b.Run(m.name, func(b *testing.B) { benchSteadyState(b, m.mod) })
	}
}

func benchSteadyState(b *testing.B, mod func(*applier.Config)) {
	ctx := context.Background()
	db, _ := openDB(b)
	src := &FakeSource{}
	a := newApplier(b, db, src, nil, newInsertHandler(), mod)
	cv := uint64(0)
	for b.Loop() {
		cv++
		e := controlevent.Event{EventID: fmt.Sprintf("evt-%d", cv), Type: typ, Key: fmt.Sprintf("k%d", cv), ControlVersion: cv, CreatedAt: time.Now()}
		src.PollFunc = func(context.Context, uint64) ([]controlevent.Event, error) { return []controlevent.Event{e}, nil }
		if n, err := a.Step(ctx); n != 1 || err != nil {
			b.Fatal(n, err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	_ = applier.DefaultMaxBatch
}

// BenchmarkApplier_CatchUpSigned is the catch-up of BenchmarkApplier_CatchUp
// with every event signed and verified (Config.Keyring) next to the same
// events unsigned and unverified, in one run: the cost of trust on the apply
// path (target: at most 10% fewer events/s).
func BenchmarkApplier_CatchUpSigned(b *testing.B) {
	k, err := trust.NewPrivateKey(make([]byte, 32))
	if err != nil {
		b.Fatal(err)
	}
	kr, _ := trust.NewKeyring(k.Public())
	plain := evs(1, benchEvents, typ)
	signed := make([]controlevent.Event, len(plain))
	var head trust.Head
	for i, e := range plain {
		cv := e.ControlVersion
		e.ControlVersion = 0
		s, next, err := trust.Sign(k, e, head)
		if err != nil {
			b.Fatal(err)
		}
		s.ControlVersion, head = cv, next
		signed[i] = s
	}
	for _, c := range []struct {
		name string
		evs  []controlevent.Event
		kr   *trust.Keyring
	}{{"unsigned", plain, nil}, {"signed", signed, kr}} {
		b.Run(c.name, func(b *testing.B) {
			benchCatchUpOf(b, c.evs, func(cfg *applier.Config) { cfg.Keyring = c.kr })
		})
	}
}
