package natsfeed

import "github.com/nats-io/nats.go"

// WakeSubscription exposes Wait's subscription to the tests (nil before the
// first Wait).
func (s *Source) WakeSubscription() *nats.Subscription {
	s.wake.mu.Lock()
	defer s.wake.mu.Unlock()
	return s.wake.sub
}
