package applier_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
)

// recoverSource is a FakeSource that implements feed.Recoverer: Recover
// closes the current channel, as a backend does when its broker is back.
type recoverSource struct {
	*FakeSource
	rmu sync.Mutex
	ch  chan struct{}
}

var _ feed.Recoverer = (*recoverSource)(nil)

func (s *recoverSource) Recovered() <-chan struct{} {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *recoverSource) Recover() {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if s.ch != nil {
		close(s.ch)
	}
	s.ch = make(chan struct{})
}

// An unavailable feed is retried after the backoff, or at once when the
// Source reports that its broker came back. With an hour of backoff, only
// the recovery can get the event applied before the test gives up.
func TestRun_RecoveryRetriesAtOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, _ := openDB(t)
	var down atomic.Bool
	down.Store(true)
	src := &recoverSource{FakeSource: &FakeSource{}}
	src.PollFunc = func(ctx context.Context, since uint64) ([]controlevent.Event, error) {
		if down.Load() {
			return nil, fmt.Errorf("fake: poll %d: no quorum: %w", since, feed.ErrUnavailable)
		}
		return evs(since+1, 1, typ), nil
	}
	a := newApplier(t, db, src, nil, newInsertHandler(), func(c *applier.Config) {
		c.MinBackoff, c.MaxBackoff = time.Hour, time.Hour
		c.PollInterval = 10 * time.Millisecond
	})
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second) // a deadlock guard, not a timing assertion
	for a.Status().State != applier.StateUnavailable {
		if time.Now().After(deadline) {
			t.Fatalf("never unavailable: %+v", a.Status())
		}
		time.Sleep(time.Millisecond)
	}
	down.Store(false)
	src.Recover()
	for {
		c, err := applier.ReadCursor(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if c == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the event was not applied after the feed recovered: %+v", a.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-runErr; err != nil {
		t.Fatalf("Run = %v", err)
	}
}
