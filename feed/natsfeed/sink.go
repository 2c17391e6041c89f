package natsfeed

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
)

var (
	_ feed.Sink          = (*Sink)(nil)
	_ feed.BatchAppender = (*Sink)(nil)
	_ feed.Recoverer     = (*Sink)(nil)
)

// Sink publishes events to the stream. It is safe for concurrent use, but
// feed order between concurrent Appends is whatever order the server receives
// them in; the pump calls it from one goroutine.
type Sink struct {
	c *conn
	// expectStream is the Nats-Expected-Stream header value, shared
	// read-only by every message.
	expectStream []string

	mu     sync.Mutex
	closed bool
}

// NewSink connects (or uses opts.Conn), then creates the stream if it is
// missing or checks the existing one as described in the package doc.
// ctx bounds the setup.
func NewSink(ctx context.Context, cfg feed.NATSConfig, opts *Options) (*Sink, error) {
	c, err := dial(cfg, opts, "sink")
	if err != nil {
		return nil, err
	}
	if err := ensureStream(ctx, c); err != nil {
		c.close()
		return nil, err
	}
	return &Sink{c: c, expectStream: []string{c.cfg.Stream}}, nil
}

// streamConfig is the configuration the Sink creates the stream with.
func streamConfig(cfg feed.NATSConfig) jetstream.StreamConfig {
	maxBytes := cfg.MaxBytes
	if maxBytes == 0 {
		maxBytes = -1
	}
	return jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: "controlfeed control events",
		Subjects:    []string{cfg.Subject},
		Retention:   jetstream.LimitsPolicy,
		MaxMsgs:     -1,
		MaxBytes:    maxBytes,
		MaxAge:      cfg.MaxAge,
		Discard:     jetstream.DiscardOld,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.DuplicateWindow,
	}
}

// ensureStream looks the stream up first and checks it (checkStream) before
// any create or update request, so a stream that is wrong for the
// configuration is refused, never changed; only a missing stream is created.
func ensureStream(ctx context.Context, c *conn) error {
	rctx, cancel := c.reqCtx(ctx)
	defer cancel()
	want := streamConfig(c.cfg)
	st, err := c.js.Stream(rctx, c.cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err = c.js.CreateStream(rctx, want); err == nil {
			c.log.Info("natsfeed: created the feed stream", "replicas", want.Replicas, "max_age", want.MaxAge,
				"max_bytes", want.MaxBytes, "duplicate_window", want.Duplicates)
			return nil
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return classify(ctx, fmt.Errorf("natsfeed: sink: create stream %q (replicas %d): %w", c.cfg.Stream, want.Replicas, err))
		}
		st, err = c.js.Stream(rctx, c.cfg.Stream) // created concurrently: check it
	}
	if err != nil {
		return classify(ctx, fmt.Errorf("natsfeed: sink: stream %q: %w", c.cfg.Stream, err))
	}
	return checkStream(c, st.CachedInfo().Config, want)
}

// checkStream rejects an existing stream whose configuration would break the
// feed's guarantees or differs from the configured replicas, and logs
// tolerated differences (limits, discard policy, extra subjects).
func checkStream(c *conn, got, want jetstream.StreamConfig) error {
	bad := func(why string) error {
		return fmt.Errorf("natsfeed: sink: existing stream %q %s; fix the stream (nats stream edit) or configure another stream name", got.Name, why)
	}
	covered := false
	for _, s := range got.Subjects {
		if subjectMatches(s, c.cfg.Subject) {
			covered = true
		}
	}
	switch {
	case !covered:
		return bad(fmt.Sprintf("has subjects %q, none of which covers %q", got.Subjects, c.cfg.Subject))
	case got.Retention != jetstream.LimitsPolicy:
		return bad(fmt.Sprintf("has %s retention; the feed needs limits retention (every node reads every event)", got.Retention))
	case got.Storage != jetstream.FileStorage:
		return bad("uses memory storage; the feed must survive a server restart (file storage)")
	case got.Duplicates < want.Duplicates:
		return bad(fmt.Sprintf("has a duplicate window of %v, shorter than the configured %v (idempotent publishing would break)", got.Duplicates, want.Duplicates))
	case got.Replicas != want.Replicas:
		return &ReplicasError{Kind: "stream", Name: got.Name, Stream: got.Name, Have: got.Replicas, Want: want.Replicas}
	}
	if got.MaxAge != want.MaxAge || got.MaxBytes != want.MaxBytes || got.Discard != want.Discard || len(got.Subjects) != 1 {
		c.log.Warn("natsfeed: existing stream differs from the configuration; using it as is",
			"max_age", got.MaxAge, "want_max_age", want.MaxAge,
			"max_bytes", got.MaxBytes, "want_max_bytes", want.MaxBytes,
			"discard", got.Discard.String(), "subjects", got.Subjects)
	}
	return nil
}

// subjectMatches reports whether the subject filter pattern (with * and >
// wildcards) matches the literal subject.
func subjectMatches(pattern, subject string) bool {
	pt := strings.Split(pattern, ".")
	st := strings.Split(subject, ".")
	for i, p := range pt {
		if p == ">" {
			return len(st) > i
		}
		if i >= len(st) || (p != "*" && p != st[i]) {
			return false
		}
	}
	return len(pt) == len(st)
}

// Name returns "jetstream".
func (s *Sink) Name() string { return Name }

// Stream returns the stream name the Sink publishes to.
func (s *Sink) Stream() string { return s.c.cfg.Stream }

func (s *Sink) checkOpen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return feed.ErrClosed
	}
	return nil
}

// message builds e's publish. after, when not empty, is the EventID that
// must be the stream's last message for the server to store e (the
// Nats-Expected-Last-Msg-Id header): AppendBatch chains its pipelined
// publishes with it so none can be stored before its predecessor.
func (s *Sink) message(e controlevent.Event, after string) (*nats.Msg, error) {
	if e.EventID == "" {
		return nil, fmt.Errorf("natsfeed: append: event has an empty event_id: %w", controlevent.ErrInvalid)
	}
	if err := e.ValidateUnpublished(); err != nil {
		return nil, fmt.Errorf("natsfeed: append %q: %w", e.EventID, err)
	}
	body, err := controlevent.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("natsfeed: append %q: %w", e.EventID, err)
	}
	// The headers WithMsgID and WithExpectStream would set, built
	// directly: the same Nats-Msg-Id (dedup) and Nats-Expected-Stream (the
	// server refuses to store the message in any other stream) on every
	// publish, without the per-call option slice and header map growth.
	hdr := nats.Header{
		jetstream.MsgIDHeader:          []string{e.EventID},
		jetstream.ExpectedStreamHeader: s.expectStream,
	}
	if after != "" {
		hdr[jetstream.ExpectedLastMsgIDHeader] = []string{after}
	}
	return &nats.Msg{Subject: s.c.cfg.Subject, Data: body, Header: hdr}, nil
}

// noRetry is the only publish option left per call: no retry on "no
// responders" (the caller retries with the same EventID).
var noRetry = []jetstream.PublishOpt{jetstream.WithRetryAttempts(0)}

func (s *Sink) stamp(e controlevent.Event, ack *jetstream.PubAck) (controlevent.Event, error) {
	if ack.Stream != s.c.cfg.Stream {
		return e, fmt.Errorf("natsfeed: append %q: acknowledged by stream %q, want %q", e.EventID, ack.Stream, s.c.cfg.Stream)
	}
	if ack.Sequence == 0 {
		return e, fmt.Errorf("natsfeed: append %q: acknowledged with sequence 0", e.EventID)
	}
	e.ControlVersion = ack.Sequence
	return e, nil
}

// Append publishes e synchronously and returns it stamped with its stream
// sequence. A duplicate EventID within the duplicate window returns the
// sequence of the original message. The input is returned unchanged on any
// error: an invalid event (empty EventID, non-zero ControlVersion, anything
// ValidateUnpublished rejects, wrapping controlevent.ErrInvalid), ctx done,
// a server error (including a wrong stream answering), or a closed Sink
// (feed.ErrClosed). A timeout leaves it unknown whether the event was
// stored; appending it again resolves that.
func (s *Sink) Append(ctx context.Context, e controlevent.Event) (controlevent.Event, error) {
	if err := s.checkOpen(); err != nil {
		return e, fmt.Errorf("natsfeed: append %q: %w", e.EventID, err)
	}
	m, err := s.message(e, "")
	if err != nil {
		return e, err
	}
	rctx, cancel := s.c.reqCtx(ctx)
	defer cancel()
	ack, err := s.c.js.PublishMsg(rctx, m, noRetry...)
	if err != nil {
		return e, classify(ctx, fmt.Errorf("natsfeed: append %q: publish to %q%s: %w", e.EventID, s.c.cfg.Subject, s.c.timeoutState(err), err))
	}
	return s.stamp(e, ack)
}

// AppendBatch publishes events with up to Options.MaxBatchWindow in flight
// (PublishAsync, each with its EventID as Nats-Msg-Id) and returns the
// stamped events of the longest published prefix, in input order, and the
// error that ended it.
//
// Feed order equals input order, also across a disconnect: every publish
// but the first of each window carries the previous event's EventID as
// Nats-Expected-Last-Msg-Id, so the server stores an event only right after
// its predecessor (a window starts only once every event before it is
// acknowledged, so its first needs no check). If the connection drops
// publishes, or reconnects and sends later ones, the server refuses each
// one after the first missing event instead of storing it out of order;
// AppendBatch then fails at the first unacknowledged event and the caller
// retries from it. When the server refuses an event because another
// publisher's message came in between (the predecessor is stored, just not
// last), that event is not stored and AppendBatch goes on from it as the
// start of a new window. The server checks duplicates first, so an event
// already in the stream resolves to its original sequence whatever the
// check says.
//
// AppendBatch also checks that the returned sequences ascend and otherwise
// fails at the first event out of order (for example the same EventID
// twice in one batch). Events after the prefix may or may not be in the
// stream; retrying them with the same EventIDs is safe. Timeouts and lost
// connections wrap feed.ErrUnavailable.
func (s *Sink) AppendBatch(ctx context.Context, events []controlevent.Event) ([]controlevent.Event, error) {
	if err := s.checkOpen(); err != nil {
		return nil, fmt.Errorf("natsfeed: append batch: %w", err)
	}
	out := make([]controlevent.Event, 0, len(events))
	for start := 0; start < len(events); {
		end := min(start+s.c.opts.MaxBatchWindow, len(events))
		var (
			n   int
			err error
		)
		out, n, err = s.appendWindow(ctx, events[start:end], out)
		start += n
		if err != nil {
			return out, classify(ctx, err)
		}
	}
	return out, nil
}

// wrongLastMsgID is the JetStream error code of a publish refused by its
// Nats-Expected-Last-Msg-Id header.
const wrongLastMsgID jetstream.ErrorCode = 10070

// appendWindow publishes events pipelined, chained by expected-last-msg-id
// from the first, and appends the stamped prefix to out. It returns how
// many events it stamped; when that is short of len(events) with a nil
// error, the server refused the next one because another publisher's
// message came in between, and the caller goes on from it.
func (s *Sink) appendWindow(ctx context.Context, events []controlevent.Event, out []controlevent.Event) ([]controlevent.Event, int, error) {
	futures := make([]jetstream.PubAckFuture, 0, len(events))
	var pubErr error
	for i, e := range events {
		after := ""
		if i > 0 {
			after = events[i-1].EventID
		}
		m, err := s.message(e, after)
		if err != nil {
			pubErr = err
			break
		}
		f, err := s.c.js.PublishMsgAsync(m, noRetry...)
		if err != nil {
			pubErr = fmt.Errorf("natsfeed: append %q: publish to %q: %w", e.EventID, s.c.cfg.Subject, err)
			break
		}
		futures = append(futures, f)
	}
	rctx, cancel := s.c.reqCtx(ctx)
	defer cancel()
	for i, f := range futures {
		e := events[i]
		select {
		case ack := <-f.Ok():
			st, err := s.stamp(e, ack)
			if err != nil {
				return out, i, err
			}
			if n := len(out); n > 0 && st.ControlVersion <= out[n-1].ControlVersion {
				return out, i, fmt.Errorf("natsfeed: append %q: stored at sequence %d, not after %q at %d: feed order would differ from input order (same event twice in the batch?)",
					e.EventID, st.ControlVersion, out[n-1].EventID, out[n-1].ControlVersion)
			}
			out = append(out, st)
		case err := <-f.Err():
			var apiErr *jetstream.APIError
			if i > 0 && errors.As(err, &apiErr) && apiErr.ErrorCode == wrongLastMsgID {
				// Not stored: its predecessor (acknowledged above) is
				// not the stream's last message. The events after it
				// are refused too (or are duplicates); go on from it.
				return out, i, nil
			}
			return out, i, fmt.Errorf("natsfeed: append %q: publish to %q: %w", e.EventID, s.c.cfg.Subject, err)
		case <-rctx.Done():
			return out, i, fmt.Errorf("natsfeed: append %q: waiting for the ack%s: %w", e.EventID, s.c.timeoutState(rctx.Err()), rctx.Err())
		}
	}
	return out, len(futures), pubErr
}

// Recovered implements feed.Recoverer: the channel is closed when the
// connection reconnects or a JetStream stream or consumer leader is elected
// (see the package doc), so the pump retries a failed publish at once.
// After Close it is never closed.
func (s *Sink) Recovered() <-chan struct{} { return s.c.Recovered() }

// Close releases the connection if the Sink opened it. Later calls fail
// with feed.ErrClosed. Close is idempotent.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.c.close()
	return nil
}
