// Package feedtest is the conformance suite for feed backends. Every backend
// runs it against itself from its own tests:
//
//	func TestConformance(t *testing.T) {
//		feedtest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) feedtest.Harness {
//			return &harness{dir: t.TempDir()}
//		})
//	}
//
// Each test is a named subtest run with a fresh harness, and states in a
// comment the sentence of the feed contract it checks. Tests of optional
// capabilities (feed.Acker, feed.CumulativeAcker, feed.Waiter,
// feed.HeadReporter) run when the Source implements them and are skipped
// otherwise; Features declares what a backend promises beyond the seam.
//
// The suite needs a backend that stamps ControlVersions; the "nop" backend,
// which discards events, is tested directly in its own package.
//
// # Closing
//
// If a Source or Sink implements io.Closer, the suite may Close it to simulate
// a restart, and a harness should also close what it opened at the end of the
// test (t.Cleanup); closing twice must be harmless.
package feedtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
)

// Features declares what a backend supports.
type Features struct {
	// Persistent: events survive closing and reopening on the same storage.
	Persistent bool
	// NeedsAck: the Source implements feed.Acker and redelivers unacked
	// events to a reopened source.
	NeedsAck bool
	// GapFree: the Sink assigns ControlVersions 1, 2, 3, ... with no gaps.
	GapFree bool
}

// Harness opens Sources and Sinks on one storage (a directory, a stream). A
// harness is made fresh for every test.
type Harness interface {
	// OpenSource opens a new Source on the harness's storage; the harness
	// closes it at test end (t.Cleanup) if it implements io.Closer.
	OpenSource(ctx context.Context, t *testing.T) feed.Source
	// OpenSink opens a new Sink on the harness's storage, with the same
	// cleanup rule.
	OpenSink(ctx context.Context, t *testing.T) feed.Sink
	// Features declares what the backend supports.
	Features() Features
}

// HarnessMaker makes a fresh Harness on fresh storage for one test.
type HarnessMaker func(ctx context.Context, t *testing.T) Harness

// opTimeout bounds every test so a hanging backend fails instead of blocking
// the test binary; it is a safety net, not an assertion about speed.
const opTimeout = 60 * time.Second

type conformanceTest struct {
	name string
	fn   func(ctx context.Context, t *testing.T, h Harness)
}

var tests = []conformanceTest{
	{"AppendStampsAscending", testAppendStampsAscending},
	{"AppendReturnsInputFields", testAppendReturnsInputFields},
	{"AppendRejectsBadInput", testAppendRejectsBadInput},
	{"AppendIdempotent", testAppendIdempotent},
	{"AppendIdempotentAcrossSinks", testAppendIdempotentAcrossSinks},
	{"PollEmptyFeed", testPollEmptyFeed},
	{"PollAscendingExclusive", testPollAscendingExclusive},
	{"PollRoundTrip", testPollRoundTrip},
	{"PollPagination", testPollPagination},
	{"PollCallerOwnsSlice", testPollCallerOwnsSlice},
	{"PollSeesOtherSink", testPollSeesOtherSink},
	{"PersistenceAcrossReopen", testPersistenceAcrossReopen},
	{"ConcurrentAppends", testConcurrentAppends},
	{"CanceledContext", testCanceledContext},
	{"UseAfterClose", testUseAfterClose},
	{"Ack", testAck},
	{"AckRedeliveryAfterReopen", testAckRedeliveryAfterReopen},
	{"Waiter", testWaiter},
	{"HeadReporter", testHeadReporter},
}

// RunConformanceTests runs every conformance test as a subtest of t, each with
// a harness from newHarness.
func RunConformanceTests(t *testing.T, newHarness HarnessMaker) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
			defer cancel()
			h := newHarness(ctx, t)
			tc.fn(ctx, t, h)
		})
	}
}

// ---- helpers ----

var createdAt = time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC)

// newEvent returns a valid unpublished event with a fresh EventID. Every other
// event carries an artifact reference, so optional fields round-trip too.
func newEvent(i int) controlevent.Event {
	e := controlevent.Event{
		EventID:     controlevent.NewEventID(),
		Type:        "feedtest.put",
		Key:         fmt.Sprintf("feedtest/%d", i),
		Version:     int64(i + 1),
		BaseVersion: int64(i),
		CreatedAt:   createdAt.Add(time.Duration(i) * time.Second),
	}
	if i%2 == 1 {
		sum := controlevent.Checksum([]byte(e.Key))
		e.ArtifactRef, e.Checksum = sum, sum
	}
	return e
}

// sameEvent compares events field by field, times by instant.
func sameEvent(a, b controlevent.Event) bool {
	ta, tb := a.CreatedAt, b.CreatedAt
	a.CreatedAt, b.CreatedAt = time.Time{}, time.Time{}
	return a == b && ta.Equal(tb)
}

func mustAppend(ctx context.Context, t *testing.T, s feed.Sink, e controlevent.Event) controlevent.Event {
	t.Helper()
	out, err := s.Append(ctx, e)
	if err != nil {
		t.Fatalf("Append(%q): %v", e.EventID, err)
	}
	if out.ControlVersion == 0 {
		t.Fatalf("Append(%q) returned ControlVersion 0 and no error", e.EventID)
	}
	return out
}

func appendN(ctx context.Context, t *testing.T, s feed.Sink, n int) []controlevent.Event {
	t.Helper()
	out := make([]controlevent.Event, n)
	for i := range n {
		out[i] = mustAppend(ctx, t, s, newEvent(i))
	}
	return out
}

// pollAll polls from since until an empty batch, checking that every batch is
// ascending, above its cursor, and continues where the previous one ended.
func pollAll(ctx context.Context, t *testing.T, src feed.Source, since uint64) []controlevent.Event {
	t.Helper()
	var all []controlevent.Event
	cursor := since
	for round := 0; ; round++ {
		batch, err := src.Poll(ctx, cursor)
		if err != nil {
			t.Fatalf("Poll(%d): %v", cursor, err)
		}
		if len(batch) == 0 {
			return all
		}
		for _, e := range batch {
			if e.ControlVersion <= cursor {
				t.Fatalf("Poll(%d) returned ControlVersion %d, not above the cursor (or not ascending)", since, e.ControlVersion)
			}
			if err := e.Validate(); err != nil {
				t.Fatalf("Poll(%d) returned an invalid event: %v", since, err)
			}
			cursor = e.ControlVersion
		}
		all = append(all, batch...)
		if round > 1_000_000 {
			t.Fatal("Poll never returned an empty batch")
		}
	}
}

// pollUntil polls until at least n events after since are visible; it allows
// backends whose reads lag their writes (brokers) to catch up.
func pollUntil(ctx context.Context, t *testing.T, src feed.Source, since uint64, n int) []controlevent.Event {
	t.Helper()
	for {
		got := pollAll(ctx, t, src, since)
		if len(got) >= n {
			return got
		}
		select {
		case <-ctx.Done():
			t.Fatalf("Poll(%d) shows %d events, want %d: %v", since, len(got), n, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func closeIt(t *testing.T, x any) bool {
	t.Helper()
	c, ok := x.(io.Closer)
	if !ok {
		return false
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return true
}

func cvs(events []controlevent.Event) []uint64 {
	out := make([]uint64, len(events))
	for i, e := range events {
		out[i] = e.ControlVersion
	}
	return out
}

// ---- tests ----

// Contract: "On success the returned event is the input stamped with its
// ControlVersion (> 0)", and ControlVersion is "a strictly increasing
// position in the feed" (successive Appends get increasing ControlVersions);
// with GapFree, they are 1, 2, 3, ...
func testAppendStampsAscending(ctx context.Context, t *testing.T, h Harness) {
	sink := h.OpenSink(ctx, t)
	got := appendN(ctx, t, sink, 10)
	for i := 1; i < len(got); i++ {
		if got[i].ControlVersion <= got[i-1].ControlVersion {
			t.Fatalf("ControlVersions not strictly increasing: %v", cvs(got))
		}
	}
	if h.Features().GapFree {
		for i, e := range got {
			if e.ControlVersion != uint64(i+1) {
				t.Fatalf("GapFree backend stamped %v, want 1..%d", cvs(got), len(got))
			}
		}
	}
}

// Contract: "the returned event is the input stamped with its ControlVersion":
// every other field is unchanged.
func testAppendReturnsInputFields(ctx context.Context, t *testing.T, h Harness) {
	sink := h.OpenSink(ctx, t)
	for i := range 2 {
		in := newEvent(i)
		out := mustAppend(ctx, t, sink, in)
		want := in
		want.ControlVersion = out.ControlVersion
		if !sameEvent(out, want) {
			t.Fatalf("Append changed fields other than ControlVersion:\n in  %+v\n out %+v", in, out)
		}
	}
}

// Contract: "The input has EventID set and ControlVersion == 0; anything else
// is an error. ... On error the input is returned unchanged."
func testAppendRejectsBadInput(ctx context.Context, t *testing.T, h Harness) {
	sink := h.OpenSink(ctx, t)
	noID := newEvent(0)
	noID.EventID = ""
	stamped := newEvent(1)
	stamped.ControlVersion = 7
	for name, in := range map[string]controlevent.Event{"EmptyEventID": noID, "NonZeroControlVersion": stamped} {
		t.Run(name, func(t *testing.T) {
			out, err := sink.Append(ctx, in)
			if err == nil {
				t.Fatalf("Append accepted %+v (returned ControlVersion %d)", in, out.ControlVersion)
			}
			if !sameEvent(out, in) {
				t.Fatalf("Append returned %+v on error, want the input unchanged %+v", out, in)
			}
		})
	}
	// Nothing was published by the rejected appends.
	src := h.OpenSource(ctx, t)
	if got := pollAll(ctx, t, src, 0); len(got) != 0 {
		t.Fatalf("rejected appends published %d events: %+v", len(got), got)
	}
}

// Contract: "EventID is the idempotent-publish key: a retry with the same
// EventID resolves to the same ControlVersion, without a second event in the
// feed."
func testAppendIdempotent(ctx context.Context, t *testing.T, h Harness) {
	sink := h.OpenSink(ctx, t)
	e := newEvent(0)
	first := mustAppend(ctx, t, sink, e)
	other := mustAppend(ctx, t, sink, newEvent(1))
	again := mustAppend(ctx, t, sink, e)
	if again.ControlVersion != first.ControlVersion {
		t.Fatalf("retry of %q got ControlVersion %d, first append got %d", e.EventID, again.ControlVersion, first.ControlVersion)
	}
	src := h.OpenSource(ctx, t)
	got := pollUntil(ctx, t, src, 0, 2)
	if len(got) != 2 {
		t.Fatalf("Poll shows %d events (%v), want 2: the retry added an event", len(got), cvs(got))
	}
	if got[0].EventID != e.EventID || got[1].EventID != other.EventID {
		t.Fatalf("Poll shows EventIDs %q, %q; want %q, %q", got[0].EventID, got[1].EventID, e.EventID, other.EventID)
	}
}

// Contract: the dedup is by EventID in the feed, not per Sink instance: a
// retry through a second Sink open on the same storage at the same time gets
// the original ControlVersion (the pump may be restarted, or run elsewhere).
func testAppendIdempotentAcrossSinks(ctx context.Context, t *testing.T, h Harness) {
	a := h.OpenSink(ctx, t)
	b := h.OpenSink(ctx, t)
	e := newEvent(0)
	first := mustAppend(ctx, t, a, e)
	again := mustAppend(ctx, t, b, e)
	if again.ControlVersion != first.ControlVersion {
		t.Fatalf("retry of %q on a second sink got ControlVersion %d, want %d", e.EventID, again.ControlVersion, first.ControlVersion)
	}
	next := mustAppend(ctx, t, b, newEvent(1))
	if next.ControlVersion <= first.ControlVersion {
		t.Fatalf("second sink stamped %d after %d: not increasing across sinks", next.ControlVersion, first.ControlVersion)
	}
}

// Contract: "An empty slice with a nil error means nothing new, never an
// error condition": a fresh feed polls empty, at any cursor.
func testPollEmptyFeed(ctx context.Context, t *testing.T, h Harness) {
	src := h.OpenSource(ctx, t)
	for _, since := range []uint64{0, 1, 1 << 40} {
		got, err := src.Poll(ctx, since)
		if err != nil {
			t.Fatalf("Poll(%d) on an empty feed: %v", since, err)
		}
		if len(got) != 0 {
			t.Fatalf("Poll(%d) on an empty feed returned %d events", since, len(got))
		}
	}
}

// Contract: "Poll returns the events with ControlVersion > sinceControlVersion,
// in ascending ControlVersion order"; since = head returns an empty slice and
// a nil error.
func testPollAscendingExclusive(ctx context.Context, t *testing.T, h Harness) {
	sink := h.OpenSink(ctx, t)
	appended := appendN(ctx, t, sink, 6)
	src := h.OpenSource(ctx, t)
	pollUntil(ctx, t, src, 0, len(appended))
	for k := range appended {
		since := appended[k].ControlVersion
		got := pollAll(ctx, t, src, since)
		want := appended[k+1:]
		if !slices.Equal(cvs(got), cvs(want)) {
			t.Fatalf("Poll(%d) = %v, want %v", since, cvs(got), cvs(want))
		}
	}
	head := appended[len(appended)-1].ControlVersion
	got, err := src.Poll(ctx, head)
	if err != nil || len(got) != 0 {
		t.Fatalf("Poll(head=%d) = %v, %v; want no events and a nil error", head, cvs(got), err)
	}
	// A cursor between two ControlVersions (possible on backends with gaps)
	// is exclusive too: the first event returned is the next one.
	got = pollAll(ctx, t, src, appended[0].ControlVersion)
	if len(got) == 0 || got[0].ControlVersion != appended[1].ControlVersion {
		t.Fatalf("Poll(%d) starts at %v, want %d", appended[0].ControlVersion, cvs(got), appended[1].ControlVersion)
	}
}

// Contract: a Source returns the events Sinks appended, intact: every field as
// appended, stamped with the ControlVersion Append returned.
func testPollRoundTrip(ctx context.Context, t *testing.T, h Harness) {
	sink := h.OpenSink(ctx, t)
	appended := appendN(ctx, t, sink, 4)
	src := h.OpenSource(ctx, t)
	got := pollUntil(ctx, t, src, 0, len(appended))
	if len(got) != len(appended) {
		t.Fatalf("Poll(0) returned %d events, want %d", len(got), len(appended))
	}
	for i := range got {
		if !sameEvent(got[i], appended[i]) {
			t.Fatalf("event %d:\n polled   %+v\n appended %+v", i, got[i], appended[i])
		}
	}
}

// Contract: Poll may return "only the first of them (a backend may bound the
// batch; callers poll again from the last one)": polling in a loop from the
// last ControlVersion yields every event, ascending, without duplicates.
func testPollPagination(ctx context.Context, t *testing.T, h Harness) {
	const n = 60
	sink := h.OpenSink(ctx, t)
	appended := appendN(ctx, t, sink, n)
	src := h.OpenSource(ctx, t)
	got := pollUntil(ctx, t, src, 0, n) // pollAll checks ascending and no duplicates
	if !slices.Equal(cvs(got), cvs(appended)) {
		t.Fatalf("paginated Poll = %v, want %v", cvs(got), cvs(appended))
	}
}

// Contract: "The caller owns the returned slice": changing it does not change
// what later Polls return.
func testPollCallerOwnsSlice(ctx context.Context, t *testing.T, h Harness) {
	sink := h.OpenSink(ctx, t)
	appended := appendN(ctx, t, sink, 3)
	src := h.OpenSource(ctx, t)
	got := pollUntil(ctx, t, src, 0, len(appended))
	for i := range got {
		got[i].EventID = "scribbled"
		got[i].ControlVersion = 999
	}
	again := pollAll(ctx, t, src, 0)
	for i := range again {
		if !sameEvent(again[i], appended[i]) {
			t.Fatalf("after the caller modified a returned slice, Poll returns %+v, want %+v", again[i], appended[i])
		}
	}
}

// Contract: a Source open before events are appended sees them on a later
// Poll (Poll is "cheap enough to call on a timer": it is how nodes follow the
// feed).
func testPollSeesOtherSink(ctx context.Context, t *testing.T, h Harness) {
	src := h.OpenSource(ctx, t)
	if got := pollAll(ctx, t, src, 0); len(got) != 0 {
		t.Fatalf("fresh feed has %d events", len(got))
	}
	sink := h.OpenSink(ctx, t)
	first := appendN(ctx, t, sink, 2)
	got := pollUntil(ctx, t, src, 0, 2)
	if !slices.Equal(cvs(got), cvs(first)) {
		t.Fatalf("Poll = %v, want %v", cvs(got), cvs(first))
	}
	more := mustAppend(ctx, t, sink, newEvent(2))
	got = pollUntil(ctx, t, src, first[1].ControlVersion, 1)
	if len(got) != 1 || got[0].EventID != more.EventID {
		t.Fatalf("Poll(%d) = %+v, want only %q", first[1].ControlVersion, got, more.EventID)
	}
}

// Contract (Persistent): events survive closing and reopening Sink and Source
// on the same storage, and "a retry with the same EventID resolves to the same
// ControlVersion" also on a new Sink after a restart.
func testPersistenceAcrossReopen(ctx context.Context, t *testing.T, h Harness) {
	if !h.Features().Persistent {
		t.Skip("backend is not Persistent")
	}
	sink := h.OpenSink(ctx, t)
	appended := appendN(ctx, t, sink, 5)
	src := h.OpenSource(ctx, t)
	pollUntil(ctx, t, src, 0, len(appended))
	if !closeIt(t, sink) || !closeIt(t, src) {
		t.Skip("Sink or Source does not implement io.Closer: cannot simulate a restart")
	}
	sink2 := h.OpenSink(ctx, t)
	src2 := h.OpenSource(ctx, t)
	got := pollUntil(ctx, t, src2, 0, len(appended))
	if !slices.Equal(cvs(got), cvs(appended)) {
		t.Fatalf("after reopen Poll(0) = %v, want %v", cvs(got), cvs(appended))
	}
	retry := appended[2]
	retry.ControlVersion = 0
	out := mustAppend(ctx, t, sink2, retry)
	if out.ControlVersion != appended[2].ControlVersion {
		t.Fatalf("retry of %q after reopen got ControlVersion %d, want %d", retry.EventID, out.ControlVersion, appended[2].ControlVersion)
	}
	next := mustAppend(ctx, t, sink2, newEvent(5))
	if next.ControlVersion <= appended[4].ControlVersion {
		t.Fatalf("first new event after reopen got ControlVersion %d, not above %d", next.ControlVersion, appended[4].ControlVersion)
	}
	if h.Features().GapFree && next.ControlVersion != appended[4].ControlVersion+1 {
		t.Fatalf("GapFree: first new event after reopen got %d, want %d", next.ControlVersion, appended[4].ControlVersion+1)
	}
	if got := pollUntil(ctx, t, src2, 0, 6); len(got) != 6 {
		t.Fatalf("after reopen and one new append Poll(0) shows %d events, want 6", len(got))
	}
}

// Contract: Sinks are used from several goroutines (and several Sinks write
// to one feed): concurrent Appends get distinct ControlVersions, all pollable,
// gap-free if the backend promises it, and each Append's retry is idempotent
// even while others append.
func testConcurrentAppends(ctx context.Context, t *testing.T, h Harness) {
	const goroutines, perG = 6, 15
	sinks := []feed.Sink{h.OpenSink(ctx, t), h.OpenSink(ctx, t)}
	results := make([][]controlevent.Event, goroutines)
	errs := make(chan error, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			sink := sinks[g%len(sinks)]
			for i := range perG {
				e := newEvent(g*perG + i)
				out, err := sink.Append(ctx, e)
				if err != nil {
					errs <- fmt.Errorf("goroutine %d: Append: %w", g, err)
					return
				}
				if i%5 == 0 { // a retry in the middle of the traffic
					again, err := sink.Append(ctx, e)
					if err != nil {
						errs <- fmt.Errorf("goroutine %d: retry Append: %w", g, err)
						return
					}
					if again.ControlVersion != out.ControlVersion {
						errs <- fmt.Errorf("goroutine %d: retry of %q got %d, first got %d", g, e.EventID, again.ControlVersion, out.ControlVersion)
						return
					}
				}
				results[g] = append(results[g], out)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	byCV := map[uint64]string{}
	for g, rs := range results {
		for i := 1; i < len(rs); i++ {
			if rs[i].ControlVersion <= rs[i-1].ControlVersion {
				t.Fatalf("goroutine %d saw ControlVersions go backwards: %d then %d", g, rs[i-1].ControlVersion, rs[i].ControlVersion)
			}
		}
		for _, e := range rs {
			if prev, dup := byCV[e.ControlVersion]; dup {
				t.Fatalf("ControlVersion %d given to both %q and %q", e.ControlVersion, prev, e.EventID)
			}
			byCV[e.ControlVersion] = e.EventID
		}
	}
	total := goroutines * perG
	src := h.OpenSource(ctx, t)
	got := pollUntil(ctx, t, src, 0, total)
	if len(got) != total {
		t.Fatalf("Poll(0) shows %d events, want %d", len(got), total)
	}
	for _, e := range got {
		if byCV[e.ControlVersion] != e.EventID {
			t.Fatalf("Poll shows %q at %d, Append returned %q for it", e.EventID, e.ControlVersion, byCV[e.ControlVersion])
		}
	}
	if h.Features().GapFree && got[len(got)-1].ControlVersion != uint64(total) {
		t.Fatalf("GapFree: %d events end at ControlVersion %d", total, got[len(got)-1].ControlVersion)
	}
}

// Contract: Poll "must return once ctx is done, with ctx's error"; Append on
// error returns the input unchanged, and a canceled Append that did not
// publish leaves no event behind.
func testCanceledContext(ctx context.Context, t *testing.T, h Harness) {
	sink := h.OpenSink(ctx, t)
	src := h.OpenSource(ctx, t)
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	got, err := src.Poll(canceled, 0)
	if err == nil {
		t.Fatalf("Poll with a canceled ctx returned %d events and no error", len(got))
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Poll with a canceled ctx: error %v does not wrap context.Canceled", err)
	}
	in := newEvent(0)
	out, err := sink.Append(canceled, in)
	if err == nil {
		t.Fatalf("Append with a canceled ctx succeeded (ControlVersion %d)", out.ControlVersion)
	}
	if !sameEvent(out, in) {
		t.Fatalf("Append with a canceled ctx returned %+v, want the input unchanged", out)
	}
	// The same event appended normally is stamped, and is in the feed once.
	mustAppend(ctx, t, sink, in)
	if got := pollUntil(ctx, t, src, 0, 1); len(got) != 1 {
		t.Fatalf("Poll shows %d events after one Append (and one canceled), want 1", len(got))
	}
}

// Contract: ErrClosed "is returned by operations on a Source or Sink after
// Close" (for backends whose Source and Sink implement io.Closer).
func testUseAfterClose(ctx context.Context, t *testing.T, h Harness) {
	sink := h.OpenSink(ctx, t)
	src := h.OpenSource(ctx, t)
	if !closeIt(t, sink) || !closeIt(t, src) {
		t.Skip("Sink or Source does not implement io.Closer")
	}
	in := newEvent(0)
	out, err := sink.Append(ctx, in)
	if !errors.Is(err, feed.ErrClosed) {
		t.Errorf("Append after Close: error %v, want one wrapping feed.ErrClosed", err)
	}
	if !sameEvent(out, in) {
		t.Errorf("Append after Close returned %+v, want the input unchanged", out)
	}
	if _, err := src.Poll(ctx, 0); !errors.Is(err, feed.ErrClosed) {
		t.Errorf("Poll after Close: error %v, want one wrapping feed.ErrClosed", err)
	}
	// Closing twice is harmless.
	closeIt(t, sink)
	closeIt(t, src)
}

// Contract (Acker): the applier acks each event after its commit, and "Ack of
// an event the source no longer tracks (it was acknowledged already, or the
// source was reopened) returns nil". CumulativeAcker, if implemented, accepts
// the last event of a batch.
func testAck(ctx context.Context, t *testing.T, h Harness) {
	src := h.OpenSource(ctx, t)
	acker, ok := src.(feed.Acker)
	if h.Features().NeedsAck && !ok {
		t.Fatalf("Features.NeedsAck is set but %T does not implement feed.Acker", src)
	}
	if !ok {
		t.Skipf("%T does not implement feed.Acker", src)
	}
	sink := h.OpenSink(ctx, t)
	appended := appendN(ctx, t, sink, 4)
	got := pollUntil(ctx, t, src, 0, len(appended))
	for _, e := range got[:2] {
		if err := acker.Ack(ctx, e.EventID); err != nil {
			t.Fatalf("Ack(%q) of a delivered event: %v", e.EventID, err)
		}
	}
	if err := acker.Ack(ctx, got[0].EventID); err != nil {
		t.Fatalf("second Ack(%q): %v, want nil", got[0].EventID, err)
	}
	if err := acker.Ack(ctx, "feedtest-never-delivered"); err != nil {
		t.Fatalf("Ack of an unknown EventID: %v, want nil", err)
	}
	if ca, ok := src.(feed.CumulativeAcker); ok {
		if err := ca.AckThrough(ctx, got[len(got)-1].EventID); err != nil {
			t.Fatalf("AckThrough(%q): %v", got[len(got)-1].EventID, err)
		}
		if err := ca.AckThrough(ctx, "feedtest-never-delivered"); err != nil {
			t.Fatalf("AckThrough of an unknown EventID: %v, want nil", err)
		}
	}
	// Acks do not change what Poll returns from a cursor.
	if again := pollAll(ctx, t, src, 0); !slices.Equal(cvs(again), cvs(appended)) {
		t.Fatalf("after acks, Poll(0) = %v, want %v: the applier always polls from its cursor", cvs(again), cvs(appended))
	}
}

// Contract (NeedsAck, Persistent): the applier polls from its own cursor, so
// after a restart "Poll(since) returns everything > since regardless of
// acks": an unacked event is delivered again, an acked one after the cursor
// is delivered too (the applied_events guard absorbs it), and events at or
// below the cursor are not. Ack of events delivered before the reopen returns
// nil.
func testAckRedeliveryAfterReopen(ctx context.Context, t *testing.T, h Harness) {
	f := h.Features()
	if !f.NeedsAck || !f.Persistent {
		t.Skip("backend does not declare NeedsAck and Persistent")
	}
	sink := h.OpenSink(ctx, t)
	appended := appendN(ctx, t, sink, 6)
	src := h.OpenSource(ctx, t)
	got := pollUntil(ctx, t, src, 0, len(appended))
	acker := src.(feed.Acker)
	for _, e := range got[:3] { // applied and acked: 1..3
		if err := acker.Ack(ctx, e.EventID); err != nil {
			t.Fatalf("Ack(%q): %v", e.EventID, err)
		}
	}
	if !closeIt(t, src) {
		t.Skip("Source does not implement io.Closer: cannot simulate a restart")
	}
	src2 := h.OpenSource(ctx, t)
	cursor := got[1].ControlVersion // the node's cursor lags its acks by one event
	again := pollUntil(ctx, t, src2, cursor, len(appended)-2)
	if want := cvs(appended[2:]); !slices.Equal(cvs(again), want) {
		t.Fatalf("after reopen Poll(%d) = %v, want %v regardless of acks", cursor, cvs(again), want)
	}
	acker2 := src2.(feed.Acker)
	for _, e := range again {
		if err := acker2.Ack(ctx, e.EventID); err != nil {
			t.Fatalf("Ack(%q) after reopen: %v", e.EventID, err)
		}
	}
	if err := acker2.Ack(ctx, got[0].EventID); err != nil {
		t.Fatalf("Ack(%q) of an event acked before the reopen: %v, want nil", got[0].EventID, err)
	}
}

// Contract (Waiter): "Wait returns nil when new events may be available ... or
// ctx's error once ctx is done": it returns after an Append from another
// Sink, immediately when events after the cursor already exist, and with
// ctx's error on cancel.
func testWaiter(ctx context.Context, t *testing.T, h Harness) {
	src := h.OpenSource(ctx, t)
	w, ok := src.(feed.Waiter)
	if !ok {
		t.Skipf("%T does not implement feed.Waiter", src)
	}
	// Cancel: a Wait on an empty feed returns ctx's error.
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Wait(cctx, 0) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait after cancel returned %v, want context.Canceled", err)
	}

	// Wake-up: a Wait blocked on an empty feed returns after an Append.
	go func() { done <- w.Wait(ctx, 0) }()
	sink := h.OpenSink(ctx, t)
	e := mustAppend(ctx, t, sink, newEvent(0))
	if err := <-done; err != nil {
		t.Fatalf("Wait after an Append returned %v, want nil", err)
	}
	if got := pollUntil(ctx, t, src, 0, 1); got[0].EventID != e.EventID {
		t.Fatalf("after Wait, Poll shows %q, want %q", got[0].EventID, e.EventID)
	}
	// Already available: Wait(since below head) returns nil.
	if err := w.Wait(ctx, 0); err != nil {
		t.Fatalf("Wait(0) with an event available: %v", err)
	}
	// Caught up: a Wait at the head blocks until canceled.
	cctx, cancel = context.WithCancel(ctx)
	go func() { done <- w.Wait(cctx, e.ControlVersion) }()
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait at the head after cancel returned %v, want context.Canceled (or a spurious nil)", err)
	}
}

// Contract (HeadReporter): Head reports "the feed's newest ControlVersion (0
// for an empty feed)": the last appended ControlVersion.
func testHeadReporter(ctx context.Context, t *testing.T, h Harness) {
	src := h.OpenSource(ctx, t)
	hr, ok := src.(feed.HeadReporter)
	if !ok {
		t.Skipf("%T does not implement feed.HeadReporter", src)
	}
	head, err := hr.Head(ctx)
	if err != nil || head != 0 {
		t.Fatalf("Head of an empty feed = %d, %v; want 0, nil", head, err)
	}
	sink := h.OpenSink(ctx, t)
	appended := appendN(ctx, t, sink, 3)
	last := appended[len(appended)-1].ControlVersion
	for {
		head, err = hr.Head(ctx)
		if err != nil {
			t.Fatalf("Head: %v", err)
		}
		if head == last {
			break
		}
		if head > last {
			t.Fatalf("Head = %d, above the last appended ControlVersion %d", head, last)
		}
		select { // a broker's head may lag the PubAck briefly
		case <-ctx.Done():
			t.Fatalf("Head = %d, want %d", head, last)
		case <-time.After(10 * time.Millisecond):
		}
	}
}
