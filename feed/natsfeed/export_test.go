package natsfeed

import (
	"context"

	"github.com/nats-io/nats.go"
)

// WakeSubscription exposes Wait's subscription to the tests (nil before the
// first Wait).
func (s *Source) WakeSubscription() *nats.Subscription {
	if ss := s.live.Load(); ss != nil && ss.isTailing() {
		return ss.sub
	}
	s.wake.mu.Lock()
	defer s.wake.mu.Unlock()
	return s.wake.sub
}

// SetDropHook makes Poll drop every delivered message at a stream sequence
// drop returns true for, as if another consumer had taken it. Nil removes
// the hook.
func (s *Source) SetDropHook(drop func(seq uint64) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if drop == nil {
		s.dropHook = nil
		return
	}
	s.dropHook = func(m *nats.Msg) bool {
		md, err := m.Metadata()
		return err == nil && drop(md.Sequence.Stream)
	}
}

// EndSession ends the Source's reading session as if its open pull request
// had expired unnoticed, without repositioning the consumer: the next Poll
// reads through a new session from where the consumer is.
func (s *Source) EndSession() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endSession()
}

// RequestContext is the conn's reqCtx, and FireRecovered its recovery
// signal, for the tests of the recovery cut.
func (s *Source) RequestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return s.c.reqCtx(ctx)
}

// FireRecovered signals a recovery as a reconnect or a leader election does.
func (s *Source) FireRecovered() { s.c.fireRecovered("test") }

// RecoveryGrace is reqCtx's grace for young requests.
const RecoveryGrace = recoveryGrace

// TimeoutState is the conn's description of a failed broker call.
func (s *Source) TimeoutState(err error) string { return s.c.timeoutState(err) }
