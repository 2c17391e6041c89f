package applier_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/controlevent"
)

// TestApplier_CallTimeout: a feed that never answers a Poll (a stalled
// broker, a lock held by another process) makes the node unavailable after
// Config.CallTimeout instead of hanging the applier for ever, and while it
// hangs Status says what the applier waits on.
func TestApplier_CallTimeout(t *testing.T) {
	db, _ := openDB(t)
	entered := make(chan struct{}, 1)
	src := &FakeSource{PollFunc: func(ctx context.Context, since uint64) ([]controlevent.Event, error) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	a := newApplier(t, db, src, nil, &insertHandler{}, func(c *applier.Config) { c.CallTimeout = 300 * time.Millisecond })
	errc := make(chan error, 1)
	go func() { _, err := a.Step(context.Background()); errc <- err }()
	<-entered
	if st := a.Status(); !strings.Contains(st.Waiting, "poll of feed fake after 0") || st.WaitingSince.IsZero() {
		t.Errorf("while Poll hangs, Status.Waiting = %q since %v", st.Waiting, st.WaitingSince)
	}
	err := <-errc
	if !errors.Is(err, applier.ErrUnavailable) || !strings.Contains(err.Error(), "CallTimeout") {
		t.Fatalf("Step: %v; want an unavailable error naming CallTimeout", err)
	}
	st := a.Status()
	if st.State != applier.StateUnavailable || st.Halted != nil || st.Waiting != "" {
		t.Errorf("after the timeout: state %v, halted %+v, waiting %q", st.State, st.Halted, st.Waiting)
	}
}
