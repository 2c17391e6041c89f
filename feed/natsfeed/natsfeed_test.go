package natsfeed_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/feedtest"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/internal/natsembed"
)

var streamSeq atomic.Int64

// testConfig returns a config for a fresh stream on srv.
func testConfig(srv *natsembed.Server) feed.NATSConfig {
	n := streamSeq.Add(1)
	return feed.NATSConfig{
		URLs:     []string{srv.ClientURL()},
		NodeName: "node-1",
		Stream:   fmt.Sprintf("T%d", n),
		Subject:  fmt.Sprintf("t%d.events", n),
	}
}

type harness struct {
	cfg feed.NATSConfig
}

func (h *harness) OpenSource(ctx context.Context, t *testing.T) feed.Source {
	t.Helper()
	return openSource(ctx, t, h.cfg)
}

func (h *harness) OpenSink(ctx context.Context, t *testing.T) feed.Sink {
	t.Helper()
	return openSink(ctx, t, h.cfg)
}

func (h *harness) Features() feedtest.Features {
	return feedtest.Features{Persistent: true, NeedsAck: true, GapFree: true}
}

func openSource(ctx context.Context, t testing.TB, cfg feed.NATSConfig) *natsfeed.Source {
	t.Helper()
	s, err := natsfeed.NewSource(ctx, cfg, nil)
	if err != nil {
		t.Fatalf("NewSource: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openSink(ctx context.Context, t testing.TB, cfg feed.NATSConfig) *natsfeed.Sink {
	t.Helper()
	s, err := natsfeed.NewSink(ctx, cfg, nil)
	if err != nil {
		t.Fatalf("NewSink: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	srv := natsembed.StartForTest(t)
	feedtest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) feedtest.Harness {
		// The producer creates the stream; a Source waits for it (see
		// TestSource_NeverCreates), so the feed exists before any test.
		cfg := testConfig(srv)
		openSink(ctx, t, cfg).Close()
		return &harness{cfg: cfg}
	})
}

func TestRegistered(t *testing.T) {
	if !containsString(feed.Sources(), natsfeed.Name) || !containsString(feed.Sinks(), natsfeed.Name) {
		t.Fatalf("%q not registered: sources %v sinks %v", natsfeed.Name, feed.Sources(), feed.Sinks())
	}
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	sink, err := feed.OpenSink(natsfeed.Name, feed.SourceConfig{NATS: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.(*natsfeed.Sink).Close()
	src, err := feed.Open(natsfeed.Name, feed.SourceConfig{NATS: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer src.(*natsfeed.Source).Close()
	cfg.NodeName = ""
	eph, err := feed.Open(natsfeed.Name, feed.SourceConfig{NATS: cfg})
	if err != nil {
		t.Fatalf("Open without NodeName: %v", err)
	}
	defer eph.(*natsfeed.Source).Close()
	if !eph.(*natsfeed.Source).Ephemeral() {
		t.Fatal("a Source without NodeName is not ephemeral")
	}
}

// TestSource_Ephemeral checks that a Source without NodeName reads the whole
// feed from any position without touching a node's durable consumer.
func TestSource_Ephemeral(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	sink := openSink(ctx, t, cfg)
	appendN(ctx, t, sink, 10)
	node := openSource(ctx, t, cfg)
	evs := mustPoll(ctx, t, node, 0)
	if err := node.AckThrough(ctx, evs[4].EventID); err != nil {
		t.Fatal(err)
	}
	_, js := rawJS(t, srv)
	info := func() *jetstream.ConsumerInfo {
		t.Helper()
		c, err := js.Consumer(ctx, cfg.Stream, node.Durable())
		if err != nil {
			t.Fatal(err)
		}
		return c.CachedInfo()
	}
	// The node, caught up, keeps a pull request open that would take the
	// events appended below: end it, so that the snapshot shows what only
	// the observer could move.
	node.EndSession()
	// Acks are sent without waiting for the server: wait until it has
	// taken this one before the snapshot.
	before := ackFloor(t, info, 5)

	ecfg := cfg
	ecfg.NodeName = ""
	tail := openSource(ctx, t, ecfg)
	if !tail.Ephemeral() || tail.Durable() != "" {
		t.Fatalf("Ephemeral() %v Durable() %q, want true and empty", tail.Ephemeral(), tail.Durable())
	}
	wantCVs(t, mustPoll(ctx, t, tail, 0), seqRange(1, 10)...)
	wantCVs(t, mustPoll(ctx, t, tail, 7), 8, 9, 10)
	appendN(ctx, t, sink, 2)
	// Caught up, the observer receives them as they are stored: a Poll
	// may come between the two.
	wantCVs(t, pollN(ctx, t, tail, 10, 2), 11, 12)
	if err := tail.Ack(ctx, evs[9].EventID); err != nil {
		t.Fatalf("Ack on an ephemeral Source: %v, want nil", err)
	}

	after := info()
	if after.Delivered.Stream != before.Delivered.Stream || after.AckFloor.Stream != before.AckFloor.Stream ||
		after.NumAckPending != before.NumAckPending {
		t.Fatalf("the node's durable consumer moved: delivered %d->%d ack floor %d->%d pending %d->%d",
			before.Delivered.Stream, after.Delivered.Stream, before.AckFloor.Stream, after.AckFloor.Stream,
			before.NumAckPending, after.NumAckPending)
	}
	// The node goes on where it was.
	wantCVs(t, mustPoll(ctx, t, node, 10), 11, 12)
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

var evSeq atomic.Int64

func newEvent() controlevent.Event {
	n := evSeq.Add(1)
	return controlevent.Event{
		EventID:   controlevent.NewEventID(),
		Type:      "test.put",
		Key:       fmt.Sprintf("k%d", n),
		Version:   n,
		CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
	}
}

func appendN(ctx context.Context, t testing.TB, s feed.Sink, n int) []controlevent.Event {
	t.Helper()
	out := make([]controlevent.Event, n)
	for i := range out {
		e, err := s.Append(ctx, newEvent())
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		out[i] = e
	}
	return out
}

func mustPoll(ctx context.Context, t testing.TB, s feed.Source, since uint64) []controlevent.Event {
	t.Helper()
	evs, err := s.Poll(ctx, since)
	if err != nil {
		t.Fatalf("Poll(%d): %v", since, err)
	}
	return evs
}

// pollN polls from since, as the applier's loop does (Poll, Wait while it
// returns nothing), until it has n events, and returns them. A caught-up
// Source returns events as they arrive, so events published together may
// come in more than one Poll.
func pollN(ctx context.Context, t testing.TB, s *natsfeed.Source, since uint64, n int) []controlevent.Event {
	t.Helper()
	var out []controlevent.Event
	for range 100 {
		evs := mustPoll(ctx, t, s, since)
		out = append(out, evs...)
		if len(out) >= n {
			return out
		}
		if len(evs) > 0 {
			since = evs[len(evs)-1].ControlVersion
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		err := s.Wait(wctx, since)
		cancel()
		if err != nil && ctx.Err() != nil {
			t.Fatal(err)
		}
	}
	t.Fatalf("got %v after 100 rounds, want %d events", cvs(out), n)
	return nil
}

func cvs(evs []controlevent.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, e := range evs {
		out[i] = e.ControlVersion
	}
	return out
}

func wantCVs(t testing.TB, evs []controlevent.Event, want ...uint64) {
	t.Helper()
	if got := cvs(evs); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("control versions %v, want %v", got, want)
	}
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func rawJS(t testing.TB, srv *natsembed.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func TestSink_Append(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	sink := openSink(ctx, t, cfg)

	t.Run("DuplicateReturnsOriginalSequence", func(t *testing.T) {
		e := newEvent()
		first, err := sink.Append(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		appendN(ctx, t, sink, 2)
		again, err := sink.Append(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		if again.ControlVersion != first.ControlVersion {
			t.Fatalf("duplicate stamped %d, want the original %d", again.ControlVersion, first.ControlVersion)
		}
		// A second Sink (another pump process) dedups too.
		other := openSink(ctx, t, cfg)
		if o, err := other.Append(ctx, e); err != nil || o.ControlVersion != first.ControlVersion {
			t.Fatalf("duplicate via another sink: %d, %v; want %d", o.ControlVersion, err, first.ControlVersion)
		}
	})
	t.Run("ErrEmptyID", func(t *testing.T) {
		e := newEvent()
		e.EventID = ""
		out, err := sink.Append(ctx, e)
		if !errors.Is(err, controlevent.ErrInvalid) || out != e {
			t.Fatalf("Append: %+v, %v; want input unchanged and ErrInvalid", out, err)
		}
	})
	t.Run("ErrStamped", func(t *testing.T) {
		e := newEvent()
		e.ControlVersion = 7
		out, err := sink.Append(ctx, e)
		if !errors.Is(err, controlevent.ErrInvalid) || out != e {
			t.Fatalf("Append: %+v, %v; want input unchanged and ErrInvalid", out, err)
		}
	})
	t.Run("ForeignStream", func(t *testing.T) {
		// Our stream is replaced by another one capturing our subject
		// while the Sink runs: the expected-stream header makes the
		// server refuse instead of silently storing elsewhere.
		fcfg := testConfig(srv)
		fsink := openSink(ctx, t, fcfg)
		_, js := rawJS(t, srv)
		if err := js.DeleteStream(ctx, fcfg.Stream); err != nil {
			t.Fatal(err)
		}
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "FOREIGN", Subjects: []string{fcfg.Subject}}); err != nil {
			t.Fatal(err)
		}
		e := newEvent()
		out, err := fsink.Append(ctx, e)
		if err == nil || out != e {
			t.Fatalf("Append into a foreign stream: %+v, %v; want an error and the input unchanged", out, err)
		}
		if _, err := fsink.AppendBatch(ctx, []controlevent.Event{newEvent()}); err == nil {
			t.Fatal("AppendBatch into a foreign stream succeeded")
		}
		st, _ := js.Stream(ctx, "FOREIGN")
		if n := st.CachedInfo().State.Msgs; n != 0 {
			t.Fatalf("foreign stream holds %d messages", n)
		}
	})
}

func TestSink_ExistingStreamChecked(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	_, js := rawJS(t, srv)
	for name, sc := range map[string]jetstream.StreamConfig{
		"WorkQueue":  {Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage},
		"Memory":     {Storage: jetstream.MemoryStorage},
		"ShortDedup": {Storage: jetstream.FileStorage, Duplicates: time.Minute},
		"OtherSubj":  {Storage: jetstream.FileStorage, Subjects: []string{"elsewhere"}},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(srv)
			sc.Name = cfg.Stream
			if sc.Subjects == nil {
				sc.Subjects = []string{cfg.Subject}
			}
			if _, err := js.CreateStream(ctx, sc); err != nil {
				t.Fatal(err)
			}
			s, err := natsfeed.NewSink(ctx, cfg, nil)
			if err == nil {
				s.Close()
				t.Fatal("NewSink accepted a stream that breaks the feed")
			}
			if !strings.Contains(err.Error(), cfg.Stream) {
				t.Fatalf("error %q does not name the stream", err)
			}
		})
	}
	t.Run("WildcardOK", func(t *testing.T) {
		cfg := testConfig(srv)
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: cfg.Stream, Subjects: []string{strings.Split(cfg.Subject, ".")[0] + ".>"},
			Storage: jetstream.FileStorage, Duplicates: 48 * time.Hour}); err != nil {
			t.Fatal(err)
		}
		openSink(ctx, t, cfg)
	})
}

func TestSink_AppendBatch(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	sink, err := natsfeed.NewSink(ctx, cfg, &natsfeed.Options{MaxBatchWindow: 7})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	in := make([]controlevent.Event, 50)
	for i := range in {
		in[i] = newEvent()
	}
	out, err := sink.AppendBatch(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	wantCVs(t, out, seqRange(1, 50)...)
	for i := range out {
		if out[i].EventID != in[i].EventID {
			t.Fatalf("out[%d] is %q, want %q", i, out[i].EventID, in[i].EventID)
		}
	}
	// Retrying a suffix plus new events: duplicates resolve to originals.
	more := append(append([]controlevent.Event{}, in[45:]...), newEvent(), newEvent())
	out, err = sink.AppendBatch(ctx, more)
	if err != nil {
		t.Fatal(err)
	}
	wantCVs(t, out, 46, 47, 48, 49, 50, 51, 52)

	// An invalid event stops the batch: the prefix is returned.
	bad := []controlevent.Event{newEvent(), newEvent(), {EventID: "x"}, newEvent()}
	out, err = sink.AppendBatch(ctx, bad)
	if !errors.Is(err, controlevent.ErrInvalid) {
		t.Fatalf("err %v, want ErrInvalid", err)
	}
	wantCVs(t, out, 53, 54)

	// The same event twice breaks input order = feed order: error.
	e := newEvent()
	out, err = sink.AppendBatch(ctx, []controlevent.Event{e, newEvent(), e})
	if err == nil || !strings.Contains(err.Error(), "order") {
		t.Fatalf("err %v, want an ordering error", err)
	}
	wantCVs(t, out, 55, 56)
}

func TestSource_CursorBehindRetention(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	sink := openSink(ctx, t, cfg)
	appendN(ctx, t, sink, 10)
	_, js := rawJS(t, srv)
	st, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSequence(6)); err != nil { // keeps 6..10
		t.Fatal(err)
	}

	t.Run("FirstPoll", func(t *testing.T) {
		src := openSource(ctx, t, cfg)
		_, err := src.Poll(ctx, 2)
		var cb *feed.CursorBehindError
		if !errors.Is(err, feed.ErrCursorBehindRetention) || !errors.As(err, &cb) {
			t.Fatalf("Poll(2): %v, want a CursorBehindError", err)
		}
		if cb.Cursor != 2 || cb.FirstAvailable != 6 || cb.Source != natsfeed.Name {
			t.Fatalf("CursorBehindError %+v", cb)
		}
		if !strings.Contains(err.Error(), "re-bootstrap") {
			t.Fatalf("message %q does not tell the operator what to do", err)
		}
		// Still an error on retry: never a silent skip.
		if _, err := src.Poll(ctx, 2); !errors.Is(err, feed.ErrCursorBehindRetention) {
			t.Fatalf("second Poll(2): %v", err)
		}
		// From the boundary it works.
		wantCVs(t, mustPoll(ctx, t, src, 5), 6, 7, 8, 9, 10)
	})
	t.Run("WhileRunning", func(t *testing.T) {
		// The consumer is positioned at 10; retention then removes 11..12
		// before the node reads them.
		c2 := cfg
		c2.NodeName = "node-running"
		src := openSource(ctx, t, c2)
		wantCVs(t, mustPoll(ctx, t, src, 5), 6, 7, 8, 9, 10)
		// Not reading meanwhile: a caught-up Source's open pull request
		// would receive 11..12 as they are stored (and return them, which
		// is right: they were there).
		src.EndSession()
		appendN(ctx, t, sink, 4) // 11..14
		if err := st.Purge(ctx, jetstream.WithPurgeSequence(13)); err != nil {
			t.Fatal(err)
		}
		if _, err := src.Poll(ctx, 10); !errors.Is(err, feed.ErrCursorBehindRetention) {
			t.Fatalf("Poll(10): %v, want ErrCursorBehindRetention", err)
		}
	})
	t.Run("EverythingPurged", func(t *testing.T) {
		if err := st.Purge(ctx); err != nil {
			t.Fatal(err)
		}
		c3 := cfg
		c3.NodeName = "node-purged"
		src := openSource(ctx, t, c3)
		if _, err := src.Poll(ctx, 3); !errors.Is(err, feed.ErrCursorBehindRetention) {
			t.Fatalf("Poll(3): %v, want ErrCursorBehindRetention", err)
		}
		// A node that applied everything is not behind.
		if evs := mustPoll(ctx, t, src, 14); len(evs) != 0 {
			t.Fatalf("Poll(14) = %v", cvs(evs))
		}
	})
}

func TestSource_CursorDisagreement(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	sink := openSink(ctx, t, cfg)
	appendN(ctx, t, sink, 10)
	src := openSource(ctx, t, cfg)

	wantCVs(t, mustPoll(ctx, t, src, 0), seqRange(1, 10)...)
	// The applier failed at 4 and re-polls from its cursor 3 (no ack):
	// the events come again, at once.
	wantCVs(t, mustPoll(ctx, t, src, 3), seqRange(4, 10)...)
	// Node restored from a snapshot at 8: consumer behind -> only 9, 10.
	wantCVs(t, mustPoll(ctx, t, src, 8), 9, 10)
	// Node restored from an older snapshot: consumer ahead -> replay.
	wantCVs(t, mustPoll(ctx, t, src, 1), seqRange(2, 10)...)
	// In step: nothing new.
	wantCVs(t, mustPoll(ctx, t, src, 10))

	// The consumer was deleted behind the Source's back.
	_, js := rawJS(t, srv)
	if err := js.DeleteConsumer(ctx, cfg.Stream, src.Durable()); err != nil {
		t.Fatal(err)
	}
	appendN(ctx, t, sink, 1)
	// The Source thinks it is in step; the fetch fails, the next Poll
	// recreates the consumer.
	evs, err := src.Poll(ctx, 10)
	if err != nil {
		evs = mustPoll(ctx, t, src, 10)
	}
	wantCVs(t, evs, 11)

	// A reopened Source (node restart) whose cursor is behind what the
	// durable consumer delivered gets the events again.
	src.Close()
	src2 := openSource(ctx, t, cfg)
	wantCVs(t, mustPoll(ctx, t, src2, 9), 10, 11)
}

func TestSource_RedeliveryAfterReopen(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	sink := openSink(ctx, t, cfg)
	appendN(ctx, t, sink, 5)

	src := openSource(ctx, t, cfg)
	evs := mustPoll(ctx, t, src, 0)
	wantCVs(t, evs, 1, 2, 3, 4, 5)
	if err := src.Ack(ctx, evs[1].EventID); err != nil {
		t.Fatal(err)
	}
	src.Close()

	// The node applied 1..2 (acked) and crashed; its cursor is 2.
	src = openSource(ctx, t, cfg)
	wantCVs(t, mustPoll(ctx, t, src, 2), 3, 4, 5)
	// Ack of an unknown id is nil.
	if err := src.Ack(ctx, evs[0].EventID); err != nil {
		t.Fatalf("Ack of a forgotten event: %v", err)
	}
}

func TestSource_AckThrough(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	sink := openSink(ctx, t, cfg)
	appendN(ctx, t, sink, 20)
	src := openSource(ctx, t, cfg)
	evs := mustPoll(ctx, t, src, 0)
	wantCVs(t, evs, seqRange(1, 20)...)

	_, js := rawJS(t, srv)
	info := func() *jetstream.ConsumerInfo {
		t.Helper()
		c, err := js.Consumer(ctx, cfg.Stream, src.Durable())
		if err != nil {
			t.Fatal(err)
		}
		return c.CachedInfo()
	}
	if n := info().NumAckPending; n != 20 {
		t.Fatalf("NumAckPending %d before ack, want 20", n)
	}
	if err := src.AckThrough(ctx, evs[11].EventID); err != nil {
		t.Fatal(err)
	}
	if ci := ackFloor(t, info, 12); ci.NumAckPending != 8 || ci.AckFloor.Stream != 12 {
		t.Fatalf("after AckThrough(12): NumAckPending %d AckFloor %d, want 8 and 12", ci.NumAckPending, ci.AckFloor.Stream)
	}
	if err := src.AckThrough(ctx, evs[19].EventID); err != nil {
		t.Fatal(err)
	}
	if ci := ackFloor(t, info, 20); ci.NumAckPending != 0 || ci.AckFloor.Stream != 20 {
		t.Fatalf("after AckThrough(20): NumAckPending %d AckFloor %d, want 0 and 20", ci.NumAckPending, ci.AckFloor.Stream)
	}
	// Handles before it were forgotten: acking them is a no-op.
	if err := src.Ack(ctx, evs[3].EventID); err != nil {
		t.Fatal(err)
	}
}

func TestSource_WaitWakesOnPublish(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	sink := openSink(ctx, t, cfg) // another connection
	appendN(ctx, t, sink, 2)
	src := openSource(ctx, t, cfg)

	// Behind the head: returns at once.
	if err := src.Wait(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// At the head: blocks until a publish.
	done := make(chan error, 1)
	go func() { done <- src.Wait(ctx, 2) }()
	select {
	case err := <-done:
		t.Fatalf("Wait at the head returned %v before any publish", err)
	default:
	}
	appendN(ctx, t, sink, 1)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	wantCVs(t, mustPoll(ctx, t, src, 2), 3)

	// Canceled context: returns its error.
	cctx, cancel := context.WithCancel(ctx)
	go func() { done <- src.Wait(cctx, 3) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait after cancel: %v", err)
	}
	if h, err := src.Head(ctx); err != nil || h != 3 {
		t.Fatalf("Head = %d, %v; want 3", h, err)
	}
}

func TestServerRestart(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	sink := openSink(ctx, t, cfg)
	src := openSource(ctx, t, cfg)
	appendN(ctx, t, sink, 3)
	evs := mustPoll(ctx, t, src, 0)
	wantCVs(t, evs, 1, 2, 3)

	natsembed.RestartForTest(t, srv)

	// Calls may fail while the clients reconnect; they recover on later
	// calls without reopening anything.
	var e controlevent.Event
	ev := newEvent()
	for {
		var err error
		if e, err = sink.Append(ctx, ev); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if e.ControlVersion != 4 {
		t.Fatalf("after restart Append stamped %d, want 4", e.ControlVersion)
	}
	for {
		if err := src.Ack(ctx, evs[2].EventID); err == nil {
			break
		} else if ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var got []controlevent.Event
	for {
		var err error
		if got, err = src.Poll(ctx, 3); err == nil && len(got) > 0 {
			break
		} else if ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	wantCVs(t, got, 4)
	if got[0].EventID != ev.EventID {
		t.Fatalf("got %q, want %q", got[0].EventID, ev.EventID)
	}
}

func TestSource_ForeignMessage(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	sink := openSink(ctx, t, cfg)
	appendN(ctx, t, sink, 2)
	_, js := rawJS(t, srv)
	if _, err := js.Publish(ctx, cfg.Subject, []byte("not json")); err != nil {
		t.Fatal(err)
	}
	appendN(ctx, t, sink, 1)
	src := openSource(ctx, t, cfg)
	// The valid events before the foreign message are delivered first.
	wantCVs(t, mustPoll(ctx, t, src, 0), 1, 2)
	_, err := src.Poll(ctx, 2)
	if err == nil || !strings.Contains(err.Error(), "stream sequence 3") {
		t.Fatalf("Poll: %v, want an error naming stream sequence 3", err)
	}
	if !errors.Is(err, controlevent.ErrInvalid) || !errors.Is(err, feed.ErrInvalidEvent) {
		t.Fatalf("Poll: %v, want it to wrap controlevent.ErrInvalid and feed.ErrInvalidEvent", err)
	}
	var ie *feed.InvalidEventError
	if !errors.As(err, &ie) || ie.ControlVersion != 3 || ie.EventID != feed.UnreadableEventID(3) {
		t.Fatalf("Poll: %#v, want an InvalidEventError at 3 with a placeholder id", ie)
	}
	// It halts there on retry too, also from an older cursor after the
	// valid events.
	if _, err := src.Poll(ctx, 2); !errors.As(err, &ie) || ie.ControlVersion != 3 {
		t.Fatalf("second Poll: %v, want the InvalidEventError at 3 again", err)
	}
	wantCVs(t, mustPoll(ctx, t, src, 1), 2)
	// An operator skip (cursor past it) moves on.
	wantCVs(t, mustPoll(ctx, t, src, 3), 4)
}

// An invalid message whose Nats-Msg-Id is readable is named by it, so an
// operator can skip it by that id.
func TestSource_InvalidMessageNamedByMsgID(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	sink := openSink(ctx, t, cfg)
	appendN(ctx, t, sink, 1)
	_, js := rawJS(t, srv)
	if _, err := js.Publish(ctx, cfg.Subject, []byte(`{"event_id":"evt-bad","type":""}`), jetstream.WithMsgID("evt-bad")); err != nil {
		t.Fatal(err)
	}
	src := openSource(ctx, t, cfg)
	wantCVs(t, mustPoll(ctx, t, src, 0), 1)
	var ie *feed.InvalidEventError
	if _, err := src.Poll(ctx, 1); !errors.As(err, &ie) || ie.EventID != "evt-bad" || ie.ControlVersion != 2 {
		t.Fatalf("Poll: %v, want an InvalidEventError for evt-bad at 2", err)
	}
}

func TestDurableName(t *testing.T) {
	for in, want := range map[string]string{
		"node-1":   "node-1",
		"edge_eu9": "edge_eu9",
	} {
		if got := natsfeed.DurableName(in); got != want {
			t.Errorf("DurableName(%q) = %q, want %q", in, got, want)
		}
	}
	a, b := natsfeed.DurableName("a.b"), natsfeed.DurableName("a_b")
	if a == b || strings.ContainsAny(a, ".*> ") {
		t.Errorf("DurableName: %q vs %q", a, b)
	}
	if n := natsfeed.DurableName(strings.Repeat("x", 300)); len(n) > 80 {
		t.Errorf("DurableName of a long name is %d bytes", len(n))
	}
}

func TestConfigValidate(t *testing.T) {
	for name, cfg := range map[string]feed.NATSConfig{
		"WildcardSubject": {NodeName: "n", Subject: "a.*"},
		"DottedStream":    {NodeName: "n", Stream: "a.b"},
		"Replicas":        {NodeName: "n", Replicas: 7},
		"DedupOverAge":    {NodeName: "n", MaxAge: time.Hour},
		"CertNoKey":       {NodeName: "n", TLSCertFile: "c.pem"},
	} {
		t.Run(name, func(t *testing.T) {
			if s, err := natsfeed.NewSource(t.Context(), cfg, nil); err == nil {
				s.Close()
				t.Fatal("NewSource accepted a bad config")
			}
		})
	}
	if err := (natsfeed.Options{FetchBatch: 20000}).Validate(); err == nil {
		t.Error("Options.Validate accepted FetchBatch > MaxAckPending")
	}
}

func FuzzDecodeMessage(f *testing.F) {
	good, _ := controlevent.Marshal(controlevent.Event{EventID: "e1", Type: "t", CreatedAt: time.Unix(0, 0).UTC()})
	f.Add(uint64(1), "e1", good)
	f.Add(uint64(2), "", good)
	f.Add(uint64(3), "other", good)
	f.Add(uint64(0), "", []byte("{}"))
	f.Add(uint64(9), "", []byte(`{"event_id":"x","type":"t","control_version":99,"checksum":"sha256:00"}`))
	f.Fuzz(func(t *testing.T, seq uint64, msgID string, body []byte) {
		hdr := nats.Header{}
		if msgID != "" {
			hdr.Set(jetstream.MsgIDHeader, msgID)
		}
		e, err := natsfeed.DecodeMessage(seq, hdr, body)
		if err != nil {
			if !errors.Is(err, controlevent.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			if seq != 0 && !strings.Contains(err.Error(), fmt.Sprint(seq)) {
				t.Fatalf("error %q does not name sequence %d", err, seq)
			}
			return
		}
		if e.ControlVersion != seq {
			t.Fatalf("ControlVersion %d, want the sequence %d", e.ControlVersion, seq)
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("decoded an invalid event: %v", err)
		}
		if msgID != "" && msgID != e.EventID {
			t.Fatalf("accepted Msg-Id %q for event %q", msgID, e.EventID)
		}
	})
}

// A consumer left by the fallback path (start sequence 8) cannot be reset
// below its start: the Source deletes and recreates it.
func TestSource_RecreateFallback(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	sink := openSink(ctx, t, cfg)
	appendN(ctx, t, sink, 10)
	_, js := rawJS(t, srv)
	if _, err := js.CreateConsumer(ctx, cfg.Stream, jetstream.ConsumerConfig{
		Durable: natsfeed.DurableName(cfg.NodeName), DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: 8,
		AckPolicy: jetstream.AckAllPolicy, FilterSubject: cfg.Subject,
	}); err != nil {
		t.Fatal(err)
	}
	src := openSource(ctx, t, cfg)
	wantCVs(t, mustPoll(ctx, t, src, 4), 5, 6, 7, 8, 9, 10)
}

// ackFloor returns the consumer's info once its ack floor has reached floor
// (acks are sent without waiting for the server's confirmation), or the
// last info read after 10 s.
func ackFloor(t *testing.T, info func() *jetstream.ConsumerInfo, floor uint64) *jetstream.ConsumerInfo {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ci := info()
		if ci.AckFloor.Stream >= floor || time.Now().After(deadline) {
			return ci
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Head follows a stream that is deleted (0) and recreated (its new last
// sequence): what the applier compares with its cursor to report a feed
// that went back (applier.Status.FeedBehindCursor).
func TestSource_HeadAfterStreamRecreated(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	appendN(ctx, t, openSink(ctx, t, cfg), 5)
	src := openSource(ctx, t, cfg)
	wantCVs(t, mustPoll(ctx, t, src, 0), 1, 2, 3, 4, 5)
	_, js := rawJS(t, srv)
	if err := js.DeleteStream(ctx, cfg.Stream); err != nil {
		t.Fatal(err)
	}
	if h, err := src.Head(ctx); err != nil || h != 0 {
		t.Fatalf("Head after the stream was deleted = %d, %v; want 0", h, err)
	}
	appendN(ctx, t, openSink(ctx, t, cfg), 2)
	if h, err := src.Head(ctx); err != nil || h != 2 {
		t.Fatalf("Head after the stream was recreated with 2 events = %d, %v; want 2", h, err)
	}
}
