package natsfeed_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/internal/natsembed"
	"github.com/controlfeed/controlfeed/internal/netproxy"
)

// cutPlan sizes a run of the disconnect test: lanes run in parallel, each
// with its own stream, proxy and Sink, and runs trials batches, each cut
// at a random point.
type cutPlan struct {
	lanes, trials, batch int
}

// TestSink_AppendBatchCut is the regression test for AppendBatch
// reordering the feed across a reconnect: a pump-like loop publishes
// batches through a proxy that cuts the connection at a random point of
// each batch (sometimes refusing reconnects for a while), retrying from the
// first event not acknowledged as the pump does; afterwards the stream must
// hold every event exactly once, in input order. The CI-sized run has
// lanes*trials = 100 trials; the stress build tag runs more.
func TestSink_AppendBatchCut(t *testing.T) {
	runCut(t, cutPlan{lanes: 10, trials: 10, batch: 150})
}

func runCut(t *testing.T, plan cutPlan) {
	t.Parallel()
	srv := natsembed.StartForTest(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	var (
		wg                  sync.WaitGroup
		reordered, failures atomic.Int64
	)
	for lane := range plan.lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, f := cutLane(t, srv, lane, plan, rand.New(rand.NewPCG(seed, uint64(lane))))
			reordered.Add(r)
			failures.Add(f)
		}()
	}
	wg.Wait()
	t.Logf("%d trials: %d AppendBatch failures retried, %d lanes with the feed out of input order", plan.lanes*plan.trials, failures.Load(), reordered.Load())
}

// cutLane returns whether its stream ended out of input order (1 or 0) and
// how many AppendBatch calls failed and were retried.
func cutLane(t *testing.T, srv *natsembed.Server, lane int, plan cutPlan, rnd *rand.Rand) (reordered, failures int64) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cfg := testConfig(srv)
	openSink(ctx, t, cfg).Close() // creates the stream
	p, err := netproxy.Listen("127.0.0.1:0", srv.Addr())
	if err != nil {
		t.Error(err)
		return
	}
	defer p.Close()
	pcfg := cfg
	pcfg.URLs = []string{"nats://" + p.Addr()}
	// A short request timeout keeps trials fast (a lost publish costs
	// one); on a loaded machine setting up may need a second try.
	var sink *natsfeed.Sink
	for attempt := 0; ; attempt++ {
		sink, err = natsfeed.NewSink(ctx, pcfg, &natsfeed.Options{RequestTimeout: time.Second, MaxBatchWindow: 64})
		if err == nil {
			break
		}
		if attempt == 4 {
			t.Error(err)
			return
		}
	}
	defer sink.Close()

	var input []controlevent.Event
	for trial := range plan.trials {
		batch := make([]controlevent.Event, plan.batch)
		for i := range batch {
			batch[i] = newEvent()
		}
		input = append(input, batch...)
		cutAfter := time.Duration(rnd.Int64N(int64(8 * time.Millisecond)))
		refuseFor := time.Duration(0)
		if rnd.IntN(3) == 0 {
			refuseFor = time.Duration(rnd.Int64N(int64(300 * time.Millisecond)))
		}
		cutDone := make(chan struct{})
		go func() {
			defer close(cutDone)
			time.Sleep(cutAfter)
			if refuseFor > 0 {
				p.Refuse(true)
			}
			p.Cut()
			if refuseFor > 0 {
				time.Sleep(refuseFor)
				p.Refuse(false)
			}
		}()
		// The pump's loop: publish, keep the acknowledged prefix, retry
		// the rest with the same EventIDs.
		pending := batch
		for len(pending) > 0 {
			if ctx.Err() != nil {
				t.Errorf("lane %d trial %d: %d events still unpublished", lane, trial, len(pending))
				<-cutDone
				return
			}
			out, err := sink.AppendBatch(ctx, pending)
			pending = pending[len(out):]
			if err != nil {
				failures++
				time.Sleep(20 * time.Millisecond)
			}
		}
		<-cutDone
	}

	got, err := readStream(ctx, t, srv, cfg.Stream)
	if err != nil {
		t.Errorf("lane %d: read the stream: %v", lane, err)
		return
	}
	for i := range max(len(got), len(input)) {
		switch {
		case i >= len(got):
			t.Errorf("lane %d: the stream holds %d events, want %d", lane, len(got), len(input))
		case i >= len(input):
			t.Errorf("lane %d: the stream holds %d events, want %d (duplicates?)", lane, len(got), len(input))
		case got[i] != input[i].EventID:
			want := -1
			for j := range input {
				if input[j].EventID == got[i] {
					want = j
				}
			}
			t.Errorf("lane %d: stream sequence %d holds input %d, want input %d", lane, i+1, want, i)
		default:
			continue
		}
		return 1, failures
	}
	return 0, failures
}

// readStream returns the Nats-Msg-Id of every message of stream, in stream
// order.
func readStream(ctx context.Context, t *testing.T, srv *natsembed.Server, stream string) ([]string, error) {
	_, js := rawJS(t, srv)
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	n := st.CachedInfo().State.Msgs
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	var ids []string
	for uint64(len(ids)) < n {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, err
		}
		before := len(ids)
		for m := range batch.Messages() {
			ids = append(ids, m.Headers().Get(jetstream.MsgIDHeader))
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, err
		}
		if len(ids) == before {
			return nil, fmt.Errorf("stream %q: read %d of %d messages, then nothing", stream, len(ids), n)
		}
	}
	return ids, nil
}
