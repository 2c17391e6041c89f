package natsfeed_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/internal/natsembed"
	"github.com/controlfeed/controlfeed/internal/netproxy"
)

// A message that never reaches the node although the stream holds it (here
// a hook drops it on every delivery, as a second consumer on the node's
// durable would take it) stops Poll with a GapError naming it: the events
// before it are returned, nothing after it.
func TestSource_GapError(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	appendN(ctx, t, openSink(ctx, t, cfg), 6)
	src := openSource(ctx, t, cfg)
	src.SetDropHook(func(seq uint64) bool { return seq == 3 })
	wantCVs(t, mustPoll(ctx, t, src, 0), 1, 2)
	for range 2 { // again on retry: never a silent skip
		evs, err := src.Poll(ctx, 2)
		var ge *feed.GapError
		if !errors.Is(err, feed.ErrGap) || !errors.As(err, &ge) || len(evs) != 0 {
			t.Fatalf("Poll(2) = %v, %v; want nothing and a GapError", cvs(evs), err)
		}
		if ge.Source != natsfeed.Name || ge.Cursor != 2 || ge.Next != 4 || ge.Missing != 3 || ge.Reason == "" {
			t.Fatalf("GapError %+v, want cursor 2, next 4, missing 3 and a reason", ge)
		}
		if errors.Is(err, feed.ErrUnavailable) {
			t.Fatalf("a gap reported as unavailable: %v", err)
		}
	}
	src.SetDropHook(nil)
	wantCVs(t, mustPoll(ctx, t, src, 2), 3, 4, 5, 6)
}

// A message lost once (to an abandoned fetch, a dropped delivery) is
// fetched again: after the cursor, by repositioning within the same Poll;
// later in a batch, by returning the events before it and repositioning on
// the next Poll.
func TestSource_LostDeliveryRefetched(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	appendN(ctx, t, openSink(ctx, t, cfg), 6)
	src := openSource(ctx, t, cfg)
	// 1 is lost on its first delivery (a hole right after the cursor),
	// 4 on its second (a hole inside the refetched batch).
	var mu sync.Mutex
	deliveries := map[uint64]int{}
	src.SetDropHook(func(seq uint64) bool {
		mu.Lock()
		defer mu.Unlock()
		deliveries[seq]++
		return seq == 1 && deliveries[seq] == 1 || seq == 4 && deliveries[seq] == 2
	})
	wantCVs(t, mustPoll(ctx, t, src, 0), 1, 2, 3)
	wantCVs(t, mustPoll(ctx, t, src, 3), 4, 5, 6)
}

// Another client takes messages from the node's durable consumer (an old
// process without the lease, an operator's tool): the node still gets every
// event, in order. Before, it got the later ones and skipped the taken.
func TestSource_DeliveriesTakenByAnotherClient(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	sink := openSink(ctx, t, cfg)
	appendN(ctx, t, sink, 5)
	src := openSource(ctx, t, cfg)
	evs := mustPoll(ctx, t, src, 0)
	wantCVs(t, evs, 1, 2, 3, 4, 5)
	if err := src.AckThrough(ctx, evs[4].EventID); err != nil {
		t.Fatal(err)
	}
	// A caught-up Source keeps a pull request open, ahead of any other
	// client's: end it, as if it had expired, so the other client's
	// request is served first.
	src.EndSession()
	appendN(ctx, t, sink, 5) // 6..10
	_, js := rawJS(t, srv)
	cons, err := js.Consumer(ctx, cfg.Stream, src.Durable())
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(3, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range batch.Messages() {
		n++
	}
	if n != 3 {
		t.Fatalf("the other client took %d messages, want 3", n)
	}
	wantCVs(t, mustPoll(ctx, t, src, 5), 6, 7, 8, 9, 10)
}

func TestSource_CheckGap(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	appendN(ctx, t, openSink(ctx, t, cfg), 10)
	_, js := rawJS(t, srv)
	st, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSequence(3)); err != nil { // keeps 3..10
		t.Fatal(err)
	}
	for _, seq := range []uint64{5, 6} {
		if err := st.DeleteMsg(ctx, seq); err != nil {
			t.Fatal(err)
		}
	}
	src := openSource(ctx, t, cfg)
	for _, tc := range []struct {
		cursor, next, missing uint64
	}{
		{0, 3, 0},   // 1, 2 purged: retention
		{4, 7, 0},   // 5, 6 deleted
		{4, 5, 0},   // nothing between
		{9, 9, 0},   // empty range
		{2, 5, 3},   // 3 and 4 still held
		{4, 8, 7},   // 5, 6 deleted, 7 held
		{10, 20, 0}, // beyond the head
	} {
		err := src.CheckGap(ctx, tc.cursor, tc.next)
		if tc.missing == 0 {
			if err != nil {
				t.Errorf("CheckGap(%d, %d) = %v, want nil", tc.cursor, tc.next, err)
			}
			continue
		}
		var ge *feed.GapError
		if !errors.As(err, &ge) || !errors.Is(err, feed.ErrGap) || ge.Missing != tc.missing || ge.Cursor != tc.cursor || ge.Next != tc.next {
			t.Errorf("CheckGap(%d, %d) = %v, want a GapError missing %d", tc.cursor, tc.next, err, tc.missing)
		}
	}

	t.Run("OtherSubjectIsNotAGap", func(t *testing.T) {
		wcfg := testConfig(srv)
		prefix := wcfg.Subject[:len(wcfg.Subject)-len(".events")]
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: wcfg.Stream, Subjects: []string{prefix + ".>"},
			Storage: jetstream.FileStorage, Duplicates: 48 * time.Hour}); err != nil {
			t.Fatal(err)
		}
		sink := openSink(ctx, t, wcfg)
		appendN(ctx, t, sink, 1)
		if _, err := js.Publish(ctx, prefix+".other", []byte("x")); err != nil {
			t.Fatal(err)
		}
		appendN(ctx, t, sink, 1)
		wsrc := openSource(ctx, t, wcfg)
		if err := wsrc.CheckGap(ctx, 1, 3); err != nil {
			t.Fatalf("CheckGap over another subject's message: %v", err)
		}
		wantCVs(t, mustPoll(ctx, t, wsrc, 0), 1, 3)
	})

	src.Close()
	if err := src.CheckGap(ctx, 1, 5); !errors.Is(err, feed.ErrClosed) {
		t.Fatalf("CheckGap after Close: %v", err)
	}
}

// Broker timeouts and lost connections are reported as feed.ErrUnavailable
// by the Source and the Sink; a bad event and a canceled context are not.
func TestUnavailable(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	direct := openSink(ctx, t, cfg)
	appendN(ctx, t, direct, 3)

	p, err := netproxy.Listen("127.0.0.1:0", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	pcfg := cfg
	pcfg.URLs = []string{"nats://" + p.Addr()}
	opts := &natsfeed.Options{RequestTimeout: 300 * time.Millisecond}
	src, err := natsfeed.NewSource(ctx, pcfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	sink, err := natsfeed.NewSink(ctx, pcfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	wantCVs(t, mustPoll(ctx, t, src, 0), 1, 2, 3)

	p.Pause(netproxy.Both)
	wantUnavailable := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, feed.ErrUnavailable) {
			t.Errorf("%s while the broker stalls: %v, want an error wrapping feed.ErrUnavailable", what, err)
		}
	}
	_, err = src.Poll(ctx, 0) // repositions: requests time out
	wantUnavailable("Poll", err)
	wantUnavailable("CheckGap", src.CheckGap(ctx, 0, 3))
	_, err = sink.Append(ctx, newEvent())
	wantUnavailable("Append", err)
	_, err = sink.AppendBatch(ctx, []controlevent.Event{newEvent(), newEvent()})
	wantUnavailable("AppendBatch", err)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := src.Poll(cctx, 0); errors.Is(err, feed.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("Poll with a canceled context: %v, want context.Canceled and not unavailable", err)
	}
	p.Resume(netproxy.Both)

	// A connection that is down.
	p.Refuse(true)
	p.Cut()
	_, err = src.Poll(ctx, 0)
	wantUnavailable("Poll while disconnected", err)
	_, err = sink.Append(ctx, newEvent())
	wantUnavailable("Append while disconnected", err)
	p.Refuse(false)

	// An invalid event is not an outage.
	_, js := rawJS(t, srv)
	if _, err := js.Publish(ctx, cfg.Subject, []byte("not json")); err != nil {
		t.Fatal(err)
	}
	// (Publishes that timed out above may have been stored since.)
	var last error
	cursor := uint64(3)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var evs []controlevent.Event
		if evs, last = src.Poll(ctx, cursor); errors.Is(last, feed.ErrInvalidEvent) {
			break
		}
		if len(evs) > 0 {
			cursor = evs[len(evs)-1].ControlVersion
		}
	}
	if !errors.Is(last, feed.ErrInvalidEvent) || errors.Is(last, feed.ErrUnavailable) {
		t.Errorf("Poll at an invalid message: %v, want ErrInvalidEvent and not unavailable", last)
	}
}

// A Poll whose no-wait request fills its batch returns at once: filling
// the batch completes the answer. (Before, a full batch was never seen as
// complete and each catch-up Poll waited out the request timeout, here
// ten minutes: the Poll's own deadline would end it with an error.)
func TestSource_FullBatchNeedsNoTimeout(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	appendN(ctx, t, openSink(ctx, t, cfg), 25)
	src, err := natsfeed.NewSource(ctx, cfg, &natsfeed.Options{FetchBatch: 10, RequestTimeout: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var cursor uint64
	for _, want := range []int{10, 10, 5} {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second) // a deadlock guard
		evs, err := src.Poll(pctx, cursor)
		cancel()
		if err != nil || len(evs) != want {
			t.Fatalf("Poll(%d) = %v, %v; want %d events", cursor, cvs(evs), err, want)
		}
		cursor = evs[len(evs)-1].ControlVersion
	}
}
