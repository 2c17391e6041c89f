package natsfeed_test

import (
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/internal/natsembed"
	"github.com/controlfeed/controlfeed/internal/netproxy"
)

func wantInUse(t *testing.T, err error) *natsfeed.NodeInUseError {
	t.Helper()
	var nu *natsfeed.NodeInUseError
	if !errors.As(err, &nu) || !errors.Is(err, natsfeed.ErrNodeNameInUse) || !errors.Is(err, feed.ErrUnavailable) {
		t.Fatalf("err %v, want a NodeInUseError wrapping ErrNodeNameInUse and feed.ErrUnavailable", err)
	}
	return nu
}

// Two processes with one node name: the second stands by and receives
// nothing while the first runs, however long both poll; the first gets
// every event; when the first closes, the second takes over from its own
// cursor. Before, the two split the durable consumer's messages.
func TestSource_OneConsumerPerNodeName(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	sink := openSink(ctx, t, cfg)
	appendN(ctx, t, sink, 5)
	first := openSource(ctx, t, cfg)
	second := openSource(ctx, t, cfg)
	wantCVs(t, mustPoll(ctx, t, first, 0), 1, 2, 3, 4, 5)
	_, err := second.Poll(ctx, 0)
	nu := wantInUse(t, err)
	host, _ := os.Hostname()
	if nu.Node != cfg.NodeName || nu.Consumer != first.Durable() || nu.PID != os.Getpid() || nu.Host != host || nu.Since.IsZero() {
		t.Fatalf("NodeInUseError %+v does not describe the holder", nu)
	}

	// Both poll as fast as they can while events keep coming.
	var (
		wg          sync.WaitGroup
		firstGot    []controlevent.Event
		secondGot   []controlevent.Event
		stop        = make(chan struct{})
		secondPolls int
	)
	wg.Add(2)
	go func() {
		defer wg.Done()
		cursor := uint64(5)
		for {
			select {
			case <-stop:
				return
			default:
			}
			evs, err := first.Poll(ctx, cursor)
			if err != nil {
				t.Errorf("first Poll: %v", err)
				return
			}
			for _, e := range evs {
				if e.ControlVersion != cursor+1 {
					t.Errorf("first: %d after %d", e.ControlVersion, cursor)
				}
				cursor = e.ControlVersion
			}
			if len(evs) > 0 {
				_ = first.AckThrough(ctx, evs[len(evs)-1].EventID)
			}
			firstGot = append(firstGot, evs...)
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			evs, err := second.Poll(ctx, 0)
			secondPolls++
			secondGot = append(secondGot, evs...)
			if err == nil {
				t.Errorf("second Poll succeeded while the first runs")
				return
			}
			wantInUse(t, err)
		}
	}()
	appendN(ctx, t, sink, 30)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	if len(secondGot) != 0 || secondPolls == 0 {
		t.Fatalf("the standby received %d events in %d polls, want none", len(secondGot), secondPolls)
	}
	wantCVs(t, firstGot, seqRange(6, 35)...)

	// The first stops: the second takes over at once, from its cursor.
	first.Close()
	wantCVs(t, mustPoll(ctx, t, second, 20), seqRange(21, 35)...)
}

// A holder that dies without closing (kill -9: its connection drops) is
// noticed by the next process at once, without waiting for the lease to
// expire.
func TestSource_LeaseTakeoverAfterCrash(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	appendN(ctx, t, openSink(ctx, t, cfg), 3)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	crashed, err := natsfeed.NewSource(ctx, cfg, &natsfeed.Options{Conn: nc, LeaseTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	wantCVs(t, mustPoll(ctx, t, crashed, 0), 1, 2, 3)
	nc.Close() // the process is gone; its lease is still in the bucket
	next := openSource(ctx, t, cfg)
	wantCVs(t, mustPoll(ctx, t, next, 1), 2, 3)
}

// A holder that stalls (a paused VM, a partition: its connection stays
// open) loses the node name once its lease expires; when it comes back it
// finds the name taken and stands by instead of consuming alongside.
func TestSource_LeaseExpiresAndFences(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	sink := openSink(ctx, t, cfg)
	appendN(ctx, t, sink, 3)
	p, err := netproxy.Listen("127.0.0.1:0", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	pcfg := cfg
	pcfg.URLs = []string{"nats://" + p.Addr()}
	opts := &natsfeed.Options{LeaseTTL: time.Second, RequestTimeout: 500 * time.Millisecond}
	stalled, err := natsfeed.NewSource(ctx, pcfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	wantCVs(t, mustPoll(ctx, t, stalled, 0), 1, 2, 3)

	p.Pause(netproxy.Both)
	other, err := natsfeed.NewSource(ctx, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	// The stalled holder does not answer pings but its connection is up:
	// the other waits for the lease to expire.
	var evs []controlevent.Event
	deadline := time.Now().Add(20 * time.Second)
	for {
		evs, err = other.Poll(ctx, 1)
		if err == nil {
			break
		}
		wantInUse(t, err)
		if time.Now().After(deadline) {
			t.Fatalf("the lease of a stalled holder did not expire: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	wantCVs(t, evs, 2, 3)
	appendN(ctx, t, sink, 2)
	p.Resume(netproxy.Both)
	// Back, the old holder finds the name taken: it reads nothing.
	for range 3 {
		if evs, err := stalled.Poll(ctx, 3); err == nil {
			t.Fatalf("the fenced holder read %v", cvs(evs))
		} else if errors.Is(err, natsfeed.ErrNodeNameInUse) {
			break
		} else if !errors.Is(err, feed.ErrUnavailable) {
			t.Fatalf("the fenced holder's Poll: %v", err)
		}
	}
	_, err = stalled.Poll(ctx, 3)
	wantInUse(t, err)
	wantCVs(t, mustPoll(ctx, t, other, 3), 4, 5)
}

// A Source without NodeName (an observer such as "controlfeed tail") takes
// no lease and never blocks or is blocked by the node.
func TestSource_EphemeralTakesNoLease(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	appendN(ctx, t, openSink(ctx, t, cfg), 2)
	node := openSource(ctx, t, cfg)
	wantCVs(t, mustPoll(ctx, t, node, 0), 1, 2)
	ecfg := cfg
	ecfg.NodeName = ""
	wantCVs(t, mustPoll(ctx, t, openSource(ctx, t, ecfg), 0), 1, 2)
	wantCVs(t, mustPoll(ctx, t, node, 1), 2)
}
