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

	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/internal/natsembed"
	"github.com/controlfeed/controlfeed/internal/netproxy"
)

// stallPlan sizes a run of the stall test: lanes run in parallel, each with
// its own stream, proxy and node, and each lane stalls its proxy stalls
// times.
type stallPlan struct {
	lanes, stalls    int
	minStall, maxGap time.Duration
	maxStall         time.Duration
}

// TestSource_Stall is the regression test for a stalled fetch losing
// events: a Source reads through a proxy that stalls one or both
// directions for 0.5-5 s at random points while events keep coming, and a
// consumer loop like the applier's (Poll from its cursor, apply, AckThrough
// the last one) must get every event once, in order, with no position
// skipped. The CI-sized run does lanes*stalls stalls in parallel; the
// stress build tag runs a bigger one (stall_stress_test.go).
func TestSource_Stall(t *testing.T) {
	runStall(t, stallPlan{lanes: 8, stalls: 2, minStall: 500 * time.Millisecond, maxStall: 5 * time.Second, maxGap: 400 * time.Millisecond})
}

func runStall(t *testing.T, plan stallPlan) {
	t.Parallel()
	srv := natsembed.StartForTest(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	var (
		wg                sync.WaitGroup
		errCount, gapErrs atomic.Int64
	)
	for lane := range plan.lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(seed, uint64(lane)))
			e, g := stallLane(t, srv, lane, plan, rnd)
			errCount.Add(e)
			gapErrs.Add(g)
		}()
	}
	wg.Wait()
	t.Logf("%d lanes x %d stalls: %d Poll errors (retried), %d of them gaps", plan.lanes, plan.stalls, errCount.Load(), gapErrs.Load())
}

// stallLane runs one lane and returns how many Poll errors the consumer saw
// and retried, and how many of those were gaps.
func stallLane(t *testing.T, srv *natsembed.Server, lane int, plan stallPlan, rnd *rand.Rand) (errs, gaps int64) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cfg := testConfig(srv)
	cfg.NodeName = fmt.Sprintf("lane-%d", lane)
	sink := openSink(ctx, t, cfg)
	p, err := netproxy.Listen("127.0.0.1:0", srv.Addr())
	if err != nil {
		t.Error(err)
		return
	}
	defer p.Close()
	pcfg := cfg
	pcfg.URLs = []string{"nats://" + p.Addr()}
	// A request timeout inside the stall range, so both a fetch that
	// outlives a stall and one that gives up are exercised.
	src, err := natsfeed.NewSource(ctx, pcfg, &natsfeed.Options{RequestTimeout: 1500 * time.Millisecond})
	if err != nil {
		t.Error(err)
		return
	}
	defer src.Close()

	// The producer publishes bursts until the stalls are over, then one
	// last burst, straight to the server.
	var (
		published   atomic.Uint64
		stallsOver  = make(chan struct{})
		produceDone = make(chan struct{})
	)
	prnd := rand.New(rand.NewPCG(rnd.Uint64(), 1))
	srnd := rand.New(rand.NewPCG(rnd.Uint64(), 2))
	go func() {
		defer close(produceDone)
		rnd := prnd
		for {
			n := 1 + rnd.IntN(8)
			for range n {
				e, err := sink.Append(ctx, newEvent())
				if err != nil {
					t.Errorf("lane %d: Append: %v", lane, err)
					return
				}
				published.Store(e.ControlVersion)
			}
			select {
			case <-stallsOver:
				return
			case <-time.After(time.Duration(20+rnd.IntN(80)) * time.Millisecond):
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		defer close(stallsOver)
		rnd := srnd
		dirs := []netproxy.Direction{netproxy.Both, netproxy.ToClient, netproxy.ToTarget}
		for range plan.stalls {
			time.Sleep(time.Duration(rnd.Int64N(int64(plan.maxGap))))
			d := dirs[rnd.IntN(len(dirs))]
			p.Pause(d)
			time.Sleep(plan.minStall + time.Duration(rnd.Int64N(int64(plan.maxStall-plan.minStall))))
			p.Resume(d)
		}
	}()

	// The consumer: an applier in miniature.
	var cursor uint64
	seen := map[string]uint64{}
	done := false
	for !done {
		if ctx.Err() != nil {
			t.Errorf("lane %d: stuck at cursor %d of %d published", lane, cursor, published.Load())
			return
		}
		evs, err := src.Poll(ctx, cursor)
		if err != nil {
			errs++
			if errors.Is(err, feed.ErrGap) {
				gaps++
			}
			time.Sleep(20 * time.Millisecond)
			continue
		}
		for _, e := range evs {
			if e.ControlVersion != cursor+1 {
				t.Errorf("lane %d: after cursor %d Poll returned %d: events %d..%d skipped", lane, cursor, e.ControlVersion, cursor+1, e.ControlVersion-1)
				return
			}
			if prev, dup := seen[e.EventID]; dup {
				t.Errorf("lane %d: event %q at %d delivered again at %d", lane, e.EventID, prev, e.ControlVersion)
				return
			}
			seen[e.EventID] = e.ControlVersion
			cursor = e.ControlVersion
		}
		if len(evs) > 0 {
			_ = src.AckThrough(ctx, evs[len(evs)-1].EventID)
			continue
		}
		select {
		case <-produceDone:
			done = cursor == published.Load()
		default:
		}
		if !done {
			wctx, wcancel := context.WithTimeout(ctx, 200*time.Millisecond)
			_ = src.Wait(wctx, cursor)
			wcancel()
		}
	}
	return errs, gaps
}
