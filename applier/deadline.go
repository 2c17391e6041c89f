package applier

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// inFlight is one call to the feed or the artifact store that has not
// returned yet.
type inFlight struct {
	what  func() string
	since time.Time
}

// call runs f with a context bounded by Config.CallTimeout and lists it in
// Status.Waiting while it runs. what describes the call; it is evaluated
// only when Status shows it. A call that outlives the timeout returns an
// error saying so, wrapping f's error (context.DeadlineExceeded, which the
// applier classifies as unavailable).
func (a *Applier) call(ctx context.Context, what func() string, f func(context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, a.cfg.CallTimeout)
	defer cancel()
	a.mu.Lock()
	if a.calls == nil {
		a.calls = map[uint64]inFlight{}
	}
	a.callSeq++
	id := a.callSeq
	a.calls[id] = inFlight{what, time.Now()}
	a.mu.Unlock()
	err := f(cctx)
	a.mu.Lock()
	delete(a.calls, id)
	a.mu.Unlock()
	if err != nil && ctx.Err() == nil && errors.Is(cctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("applier: %s: no answer within %v (Config.CallTimeout): %w", what(), a.cfg.CallTimeout, err)
	}
	return err
}

// oldestCall returns the description and start of the oldest call in
// flight. a.mu must be held.
func (a *Applier) oldestCall() (string, time.Time) {
	var oldest *inFlight
	for _, c := range a.calls {
		if oldest == nil || c.since.Before(oldest.since) {
			c := c
			oldest = &c
		}
	}
	if oldest == nil {
		return "", time.Time{}
	}
	return oldest.what(), oldest.since
}

// wait blocks in the Source's Wait for at most CallTimeout; running out of
// time is a spurious wake-up (the caller then polls), which feed.Waiter
// allows, so an idle node still polls now and then even if the Source
// never wakes it.
func (a *Applier) wait(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, a.cfg.CallTimeout)
	defer cancel()
	err := a.waiter.Wait(wctx, a.Status().Cursor)
	if err != nil && ctx.Err() == nil && errors.Is(wctx.Err(), context.DeadlineExceeded) {
		return nil
	}
	return err
}
