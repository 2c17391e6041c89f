package natsfeed_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/internal/natsembed"
)

// TestSource_WaitSteadyState: once caught up, Wait waits on the Source's
// one reading session for the Source's life (no subscribe per call), wakes
// on a publish after the last Poll, is not woken by a duplicate the stream
// discarded, and the subscription goes on Close.
func TestSource_WaitSteadyState(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	sink := openSink(ctx, t, cfg)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	src, err := natsfeed.NewSource(ctx, cfg, &natsfeed.Options{Conn: nc})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()

	var cursor uint64
	var sub *nats.Subscription
	for round := range 4 {
		evs := appendN(ctx, t, sink, 1)
		got := waitPoll(ctx, t, src, cursor)
		if len(got) != 1 || got[0].EventID != evs[0].EventID {
			t.Fatalf("round %d: Poll after Wait = %v, want %s", round, cvs(got), evs[0].EventID)
		}
		cursor = got[0].ControlVersion
		if err := src.Ack(ctx, got[0].EventID); err != nil {
			t.Fatal(err)
		}
		// (waitPoll calls Wait only when a Poll came back empty.)
		if cur := src.WakeSubscription(); sub == nil {
			sub = cur
		} else if cur != sub {
			t.Fatalf("round %d: Wait made a new subscription", round)
		}
	}

	// At the head, after a Poll: blocks.
	wantCVs(t, mustPoll(ctx, t, src, cursor))
	done := make(chan error, 1)
	go func() { done <- src.Wait(ctx, cursor) }()
	// A new event (published again below as a duplicate): Wait wakes.
	dup := newEvent()
	dup.EventID = "dup-" + dup.EventID
	if _, err := sink.Append(ctx, dup); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Poll as the applier does (a spurious wake-up is allowed).
	first := waitPoll(ctx, t, src, cursor)
	if len(first) != 1 {
		t.Fatalf("Poll after the first publish of %s = %v", dup.EventID, cvs(first))
	}
	cursor = first[0].ControlVersion
	wantCVs(t, mustPoll(ctx, t, src, cursor))
	// Caught up, the Source waits on its open pull request: a duplicate
	// the stream discards is never delivered, so it wakes nothing.
	wctx, wcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	go func() { done <- src.Wait(wctx, cursor) }()
	if _, err := sink.Append(ctx, dup); err != nil { // now a duplicate
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait after a discarded duplicate = %v, want it to block until its deadline", err)
	}
	wcancel()
	wantCVs(t, mustPoll(ctx, t, src, cursor)) // nothing new
	go func() { done <- src.Wait(ctx, cursor) }()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("Wait returned %v with nothing published", err)
	default:
	}
	appendN(ctx, t, sink, 1)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	wantCVs(t, waitPoll(ctx, t, src, cursor), cursor+1)

	if cur := src.WakeSubscription(); sub != nil && cur != sub {
		t.Fatalf("Wait made a new subscription")
	}
	sub = src.WakeSubscription()
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if sub.IsValid() {
		t.Fatalf("after Close the wake-up subscription is still valid")
	}
}

// waitPoll polls after since, as the applier's loop does: Poll, and Wait
// while it returns nothing (the server may answer a no-wait fetch before
// the consumer noticed a message just stored; Wait then returns soon). It
// fails after 100 empty rounds.
func waitPoll(ctx context.Context, t *testing.T, src *natsfeed.Source, since uint64) []controlevent.Event {
	t.Helper()
	for range 100 {
		if got := mustPoll(ctx, t, src, since); len(got) > 0 {
			return got
		}
		if err := src.Wait(ctx, since); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatalf("no event after %d in 100 Wait+Poll rounds", since)
	return nil
}
