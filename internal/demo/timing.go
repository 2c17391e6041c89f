package demo

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
)

// timedSource wraps a node's feed.Source and records, for each event, when
// the applier acknowledged it. The applier acknowledges only after the
// transaction that applied the event (and recorded it in applied_events)
// committed, so that instant is a faithful "applied and durable on the node"
// time. It always offers AckThrough and Ack, and forwards them to the inner
// source when it implements them; it forwards Wait and Head.
type timedSource struct {
	inner feed.Source

	mu      sync.Mutex
	pending []pendingEvent       // delivered, not yet acknowledged, ascending
	applied map[string]time.Time // EventID -> first acknowledgement
}

type pendingEvent struct {
	id string
	cv uint64
}

var (
	_ feed.Source          = (*timedSource)(nil)
	_ feed.Acker           = (*timedSource)(nil)
	_ feed.CumulativeAcker = (*timedSource)(nil)
	_ feed.Waiter          = (*timedSource)(nil)
	_ feed.HeadReporter    = (*timedSource)(nil)
	_ io.Closer            = (*timedSource)(nil)
)

func newTimedSource(inner feed.Source) *timedSource {
	return &timedSource{inner: inner, applied: map[string]time.Time{}}
}

// source returns s as the applier should see it: with feed.GapChecker
// exactly when the inner source has it, so the demo's nodes keep the
// applier's backstop against holes in a dense feed, and a sparse feed is
// not mistaken for a dense one.
func (s *timedSource) source() feed.Source {
	if gc, ok := s.inner.(feed.GapChecker); ok {
		return &denseTimedSource{s, gc}
	}
	return s
}

// denseTimedSource is a timedSource over a source that implements
// feed.GapChecker, which it forwards.
type denseTimedSource struct {
	*timedSource
	gc feed.GapChecker
}

var _ feed.GapChecker = (*denseTimedSource)(nil)

func (s *denseTimedSource) CheckGap(ctx context.Context, cursor, next uint64) error {
	return s.gc.CheckGap(ctx, cursor, next)
}

func (s *timedSource) Name() string { return s.inner.Name() }

func (s *timedSource) Poll(ctx context.Context, since uint64) ([]controlevent.Event, error) {
	evs, err := s.inner.Poll(ctx, since)
	if err != nil {
		return evs, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// A re-poll from an older cursor redelivers: keep the list ascending
	// and free of repeats.
	keep := s.pending[:0]
	for _, p := range s.pending {
		if p.cv <= since {
			keep = append(keep, p)
		}
	}
	s.pending = keep
	for _, e := range evs {
		s.pending = append(s.pending, pendingEvent{id: e.EventID, cv: e.ControlVersion})
	}
	return evs, nil
}

// mark records now as the apply time of eventID and of every pending event
// before it.
func (s *timedSource) mark(eventID string) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var through uint64
	found := false
	for _, p := range s.pending {
		if p.id == eventID {
			through, found = p.cv, true
			break
		}
	}
	if !found {
		return
	}
	keep := s.pending[:0]
	for _, p := range s.pending {
		if p.cv <= through {
			if _, ok := s.applied[p.id]; !ok {
				s.applied[p.id] = now
			}
			continue
		}
		keep = append(keep, p)
	}
	s.pending = keep
}

func (s *timedSource) Ack(ctx context.Context, eventID string) error {
	s.mark(eventID)
	if a, ok := s.inner.(feed.Acker); ok {
		return a.Ack(ctx, eventID)
	}
	return nil
}

func (s *timedSource) AckThrough(ctx context.Context, eventID string) error {
	s.mark(eventID)
	if a, ok := s.inner.(feed.CumulativeAcker); ok {
		return a.AckThrough(ctx, eventID)
	}
	return nil
}

// Wait forwards to the inner source, or sleeps briefly when it cannot wait.
func (s *timedSource) Wait(ctx context.Context, since uint64) error {
	if w, ok := s.inner.(feed.Waiter); ok {
		return w.Wait(ctx, since)
	}
	t := time.NewTimer(10 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (s *timedSource) Head(ctx context.Context) (uint64, error) {
	if h, ok := s.inner.(feed.HeadReporter); ok {
		return h.Head(ctx)
	}
	return 0, errors.New("demo: head: the source cannot report its head")
}

func (s *timedSource) Close() error {
	if c, ok := s.inner.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// appliedAt returns a copy of the recorded apply times.
func (s *timedSource) appliedAt() map[string]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]time.Time, len(s.applied))
	for k, v := range s.applied {
		m[k] = v
	}
	return m
}
