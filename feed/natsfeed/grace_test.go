package natsfeed_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/internal/natsembed"
)

// A recovery (a reconnect, a leader election) cuts a request that was
// waiting, so it is retried at once, but not one just sent: on a cluster a
// new consumer's own first leader election fires while its create request
// is in flight, and cutting that made every new node log a false
// "unavailable". A request younger than RecoveryGrace is cut only once it
// is that old; older ones are cut at once.
func TestReqCtx_RecoveryGrace(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	src := openSource(ctx, t, testConfig(srv))
	_ = src.Recovered() // start watching recoveries

	waiting, cancelWaiting := src.RequestContext(ctx)
	defer cancelWaiting()
	time.Sleep(natsfeed.RecoveryGrace + 100*time.Millisecond)
	freshSent := time.Now()
	fresh, cancelFresh := src.RequestContext(ctx)
	defer cancelFresh()
	src.FireRecovered()

	select {
	case <-waiting.Done():
		if !errors.Is(waiting.Err(), context.Canceled) {
			t.Fatalf("the waiting request ended with %v, want canceled by the recovery", waiting.Err())
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a request older than the grace was not cut within 2s of the recovery")
	}
	select {
	case <-fresh.Done():
		if age := time.Since(freshSent); age < natsfeed.RecoveryGrace {
			t.Fatalf("a request %v old was cut by the recovery; want it kept until %v", age, natsfeed.RecoveryGrace)
		}
		if !errors.Is(fresh.Err(), context.Canceled) {
			t.Fatalf("the fresh request ended with %v, want canceled by the recovery", fresh.Err())
		}
	case <-time.After(natsfeed.RecoveryGrace + 2*time.Second):
		t.Fatal("the fresh request was never cut: one that waits for an answer that never comes would wait out its timeout")
	}
}

// A publish no stream answered (a lease renewal or an append during a
// quorum loss) is described as no leader, not left bare.
func TestTimeoutState_NoStreamResponse(t *testing.T) {
	srv := natsembed.StartForTest(t)
	src := openSource(t.Context(), t, testConfig(srv))
	if got := src.TimeoutState(fmt.Errorf("renew: %w", jetstream.ErrNoStreamResponse)); !strings.Contains(got, "no leader now") || !strings.Contains(got, "majority") {
		t.Errorf("no stream response: %q", got)
	}
	if got := src.TimeoutState(context.DeadlineExceeded); !strings.Contains(got, "request timeout") {
		t.Errorf("deadline: %q", got)
	}
	if got := src.TimeoutState(errors.New("other")); got != "" {
		t.Errorf("another error: %q", got)
	}
}
