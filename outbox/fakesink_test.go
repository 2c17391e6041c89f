package outbox_test

import (
	"context"
	"fmt"
	"sync"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
)

// FakeSink is a feed.Sink for tests: by default it stamps ControlVersions
// 1, 2, 3, ... and dedups by EventID like a real broker. AppendFunc, when
// set, replaces Append and may call Stamp for the default behaviour. Every
// call is recorded in Calls.
type FakeSink struct {
	AppendFunc func(ctx context.Context, e controlevent.Event) (controlevent.Event, error)

	mu    sync.Mutex
	next  uint64
	seen  map[string]uint64
	calls []controlevent.Event
	feed  []controlevent.Event // events that entered the feed, in order
}

var _ feed.Sink = (*FakeSink)(nil)

func (s *FakeSink) Name() string { return "fake" }

func (s *FakeSink) Append(ctx context.Context, e controlevent.Event) (controlevent.Event, error) {
	s.mu.Lock()
	s.calls = append(s.calls, e)
	f := s.AppendFunc
	s.mu.Unlock()
	if f != nil {
		return f(ctx, e)
	}
	return s.Stamp(e)
}

// Stamp is the default Append: dedup by EventID, else the next version.
func (s *FakeSink) Stamp(e controlevent.Event) (controlevent.Event, error) {
	if e.ControlVersion != 0 {
		return e, fmt.Errorf("fake: append %q: control_version %d, want 0", e.EventID, e.ControlVersion)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[string]uint64{}
	}
	if cv, ok := s.seen[e.EventID]; ok {
		e.ControlVersion = cv
		return e, nil
	}
	s.next++
	s.seen[e.EventID] = s.next
	e.ControlVersion = s.next
	s.feed = append(s.feed, e)
	return e, nil
}

// Calls returns the events passed to Append (or AppendBatch), in call order.
func (s *FakeSink) Calls() []controlevent.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]controlevent.Event(nil), s.calls...)
}

// Feed returns the events that entered the feed, in feed order.
func (s *FakeSink) Feed() []controlevent.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]controlevent.Event(nil), s.feed...)
}

// FakeBatchSink adds feed.BatchAppender. AppendBatchFunc, when set, replaces
// AppendBatch; the default stamps each event in order and stops at the first
// error.
type FakeBatchSink struct {
	FakeSink
	AppendBatchFunc func(ctx context.Context, events []controlevent.Event) ([]controlevent.Event, error)

	batches int
}

var _ feed.BatchAppender = (*FakeBatchSink)(nil)

func (s *FakeBatchSink) AppendBatch(ctx context.Context, events []controlevent.Event) ([]controlevent.Event, error) {
	s.mu.Lock()
	s.batches++
	s.calls = append(s.calls, events...)
	f := s.AppendBatchFunc
	s.mu.Unlock()
	if f != nil {
		return f(ctx, events)
	}
	out := make([]controlevent.Event, 0, len(events))
	for _, e := range events {
		got, err := s.Stamp(e)
		if err != nil {
			return out, err
		}
		out = append(out, got)
	}
	return out, nil
}

func (s *FakeBatchSink) Batches() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.batches
}
