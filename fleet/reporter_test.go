package fleet_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/fleet"
)

// memStore is a fleet.Store in memory with a fault hook.
type memStore struct {
	mu      sync.Mutex
	puts    []fleet.Report
	PutFunc func(fleet.Report) error
}

func (m *memStore) Put(_ context.Context, r fleet.Report) error {
	if m.PutFunc != nil {
		if err := m.PutFunc(r); err != nil {
			return err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.puts = append(m.puts, r)
	return nil
}
func (m *memStore) List(context.Context) ([]fleet.Entry, error) { return nil, nil }
func (m *memStore) Get(context.Context, string) (fleet.Entry, error) {
	return fleet.Entry{}, fleet.ErrNotFound
}
func (m *memStore) Delete(context.Context, string) error { return fleet.ErrNotFound }
func (m *memStore) Name() string                         { return "mem" }

func TestReporter_Tick(t *testing.T) {
	st := &memStore{}
	cur := fleet.Report{Node: "n1", Cursor: 1}
	r, err := fleet.NewReporter(st, func(context.Context) (fleet.Report, error) { return cur, nil },
		&fleet.ReporterConfig{Debounce: time.Millisecond, Heartbeat: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if !r.Tick(ctx) {
		t.Fatal("first Tick wrote nothing")
	}
	if r.Tick(ctx) {
		t.Error("Tick of an unchanged node wrote a report before the heartbeat")
	}
	cur.Halted = &fleet.Halt{EventID: "e2", Attempts: 1}
	if !r.Tick(ctx) {
		t.Error("Tick after a halt wrote nothing")
	}
	cur.Halted.Attempts = 5 // a retry is not a change
	if r.Tick(ctx) {
		t.Error("Tick after another attempt at the same halt wrote a report")
	}
	time.Sleep(250 * time.Millisecond)
	if !r.Tick(ctx) {
		t.Error("Tick after the heartbeat wrote nothing")
	}
	if len(st.puts) != 3 || st.puts[2].Seq != 3 || st.puts[0].Format != fleet.Format || st.puts[0].ReportedAt.IsZero() {
		t.Errorf("puts = %+v; want 3 with Seq, Format and ReportedAt set", st.puts)
	}
	// A failing store is counted and retried at the next look.
	st.PutFunc = func(fleet.Report) error { return errors.New("broker down") }
	cur.Cursor = 2
	if r.Tick(ctx) || r.Stats().Failures != 1 || r.Stats().LastError != "broker down" {
		t.Errorf("Tick with a failing store: stats %+v", r.Stats())
	}
	st.PutFunc = nil
	if !r.Tick(ctx) || r.Stats().Published != 4 {
		t.Errorf("Tick after the store recovered: stats %+v", r.Stats())
	}
}

func TestReporterConfig_Validate(t *testing.T) {
	for _, c := range []fleet.ReporterConfig{{Debounce: -1}, {Heartbeat: time.Millisecond, Debounce: time.Second}} {
		if _, err := fleet.NewReporter(&memStore{}, func(context.Context) (fleet.Report, error) { return fleet.Report{}, nil }, &c); err == nil {
			t.Errorf("NewReporter(%+v) accepted it", c)
		}
	}
}
