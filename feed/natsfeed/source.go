package natsfeed

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
)

var (
	_ feed.Source          = (*Source)(nil)
	_ feed.Acker           = (*Source)(nil)
	_ feed.CumulativeAcker = (*Source)(nil)
	_ feed.Waiter          = (*Source)(nil)
	_ feed.HeadReporter    = (*Source)(nil)
	_ feed.GapChecker      = (*Source)(nil)
	_ feed.Recoverer       = (*Source)(nil)
)

// Source reads the stream through this node's durable pull consumer, or,
// when NATSConfig.NodeName is empty, through a read-only ephemeral consumer
// (see NewSource). Its methods are safe for concurrent use (they serialize
// internally), though the applier calls them from one goroutine; Wait does
// not block the others.
type Source struct {
	c         *conn
	durable   string // "" when ephemeral
	ephemeral bool

	lease *lease // nil when ephemeral; see lease.go

	mu       sync.Mutex
	closed   bool
	st       jetstream.Stream   // the stream as of the last sync; nil before
	syncHead uint64             // the stream's last sequence at the last sync
	cons     jetstream.Consumer // nil until the first successful sync
	pos      uint64             // highest stream sequence the consumer delivered
	posKnown bool               // pos is in step with the consumer
	held     map[string]heldMsg // ack handles by EventID, until acknowledged
	sess     *session           // reading of cons at pos; nil until the next Poll (see session.go)

	// live is sess and livePos pos, for the lease's loss callback and for
	// Wait, which must not take mu.
	live    atomic.Pointer[session]
	livePos atomic.Uint64

	// dropHook, set by tests, drops the delivered messages it returns
	// true for, as if another consumer had taken them.
	dropHook func(*nats.Msg) bool

	wake *waker // Wait's subscription; see wait.go
}

type heldMsg struct {
	reply string // the delivery's ack subject
	seq   uint64
}

// NewSource connects (or uses opts.Conn). The stream need not exist yet:
// Poll reports it unavailable until the producer's Sink has created it (a
// Source never creates the stream or anything on its behalf); the consumer
// is created or reconciled by the first Poll once it exists. ctx is unused today
// but bounds future setup work.
//
// With cfg.NodeName set, the Source reads through that node's durable
// consumer (see DurableName), which a fleet node needs: the server keeps its
// position and pending acks across restarts. It first takes the node name's
// lease (see the package doc): while another process holds it, Poll fails
// with a *NodeInUseError and touches nothing. With cfg.NodeName empty, the
// Source is a read-only observer (what "controlfeed tail" uses): it reads
// through an ephemeral consumer with no acknowledgements (AckNone), created
// at since+1 by Poll and recreated whenever since moves elsewhere, and
// removed by the server once unused for EphemeralInactiveThreshold. It never
// touches any node's durable consumer; Ack is a no-op that returns nil.
func NewSource(ctx context.Context, cfg feed.NATSConfig, opts *Options) (*Source, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("natsfeed: source %q: %w", cfg.NodeName, err)
	}
	c, err := dial(cfg, opts, "source")
	if err != nil {
		return nil, err
	}
	s := &Source{c: c, held: map[string]heldMsg{}, wake: newWaker()}
	if cfg.NodeName == "" {
		s.ephemeral = true
	} else {
		s.durable = DurableName(cfg.NodeName)
		s.lease = newLease(c, s.durable)
		// Another process consumes now: stop receiving at once.
		s.lease.onLost = func() {
			if ss := s.live.Load(); ss != nil {
				ss.close()
			}
		}
	}
	return s, nil
}

// EphemeralInactiveThreshold is how long the server keeps the ephemeral
// consumer of a Source without NodeName after its last use.
const EphemeralInactiveThreshold = 5 * time.Minute

// Ephemeral reports whether the Source reads through an ephemeral, ack-less
// consumer (NATSConfig.NodeName was empty) instead of a durable one.
func (s *Source) Ephemeral() bool { return s.ephemeral }

// consumerLabel names the consumer in errors.
func (s *Source) consumerLabel() string {
	if s.ephemeral {
		return "(ephemeral)"
	}
	return s.durable
}

// Name returns "jetstream".
func (s *Source) Name() string { return Name }

// Durable returns the name of this node's durable consumer, "" for an
// ephemeral Source.
func (s *Source) Durable() string { return s.durable }

// Poll returns up to Options.FetchBatch events with ControlVersion > since,
// ascending and contiguous: every stream sequence between since and the
// last event returned is either returned or no longer held by the stream
// (deleted, or a message on another subject). It returns what the server
// has available and does not wait for new messages (see Wait): the
// deliveries already received by the reading session (and those the
// consumer reported pending behind them, which are on their way), or, when
// none were received, the answer of one no-wait pull request. Once caught
// up, the Source receives new events as they are stored, so events
// published together may be returned by more than one Poll. When
// since disagrees with the consumer's position the consumer is recreated at
// since+1 first (see the package doc), which costs a few extra round trips.
//
// A fetch that was cut short (a stalled link, a slow broker) or that
// skipped a message the stream still holds never moves the node past that
// message: the events before it are returned and the consumer is
// repositioned at the next Poll, or, when nothing before it was delivered,
// at once (up to twice per call). If the message is skipped again, Poll
// returns a *feed.GapError (errors.Is feed.ErrGap) naming it and returns
// nothing past since.
//
// It returns a *NodeInUseError while another process holds this node
// name's lease (see the package doc), a *feed.CursorBehindError when the
// stream no longer holds since+1, a *feed.InvalidEventError when the next
// message is not a valid event, errors wrapping feed.ErrUnavailable for
// timeouts and lost connections, ctx's error once ctx is done, and an error
// wrapping ErrNoStream and feed.ErrUnavailable while the stream does not
// exist yet (the Source never creates it: the producer's Sink does). After
// any error the next Poll reconciles the consumer again.
func (s *Source) Poll(ctx context.Context, since uint64) ([]controlevent.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("natsfeed: poll %d: %w", since, feed.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.wake.pollStarted()
	evs, err := s.poll(ctx, since)
	if err != nil {
		s.posKnown = false
		s.endSession()
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return nil, err
		}
		return nil, classify(ctx, interrupted(ctx, fmt.Sprintf("poll %d", since), err))
	}
	return evs, nil
}

// maxRepositions bounds how often one Poll repositions the consumer after
// a hole right after the cursor before it reports a gap.
const maxRepositions = 2

func (s *Source) poll(ctx context.Context, since uint64) ([]controlevent.Event, error) {
	if s.lease != nil {
		acquired, err := s.lease.ensure(ctx)
		if err != nil {
			if errors.Is(err, ErrNodeNameInUse) {
				// Another process consumes now: the handles of what
				// this one was given before are not ours to ack, and
				// nothing more may be delivered to it.
				s.held = map[string]heldMsg{}
				s.endSession()
			}
			return nil, err
		}
		if acquired {
			// Whatever another holder did to the consumer meanwhile,
			// reconcile it with our cursor before reading.
			s.posKnown, s.held = false, map[string]heldMsg{}
		}
	}
	if s.sess != nil {
		if why := s.sess.trouble(); why != "" {
			s.c.log.Debug("natsfeed: ending the consumer's reading session; reconciling the consumer", "consumer", s.consumerLabel(), "why", why)
			s.endSession()
			s.posKnown = false
		}
	}
	for attempt := 0; ; attempt++ {
		if !s.posKnown || s.pos != since || s.cons == nil {
			ok, err := s.sync(ctx, since)
			if err != nil || !ok {
				return nil, err
			}
		}
		evs, gap, err := s.fetchEvents(ctx, since)
		if err != nil {
			return nil, err
		}
		if gap == nil {
			return evs, nil
		}
		if attempt < maxRepositions {
			s.c.log.Warn("natsfeed: the consumer delivered past a message the stream still holds; repositioning it at the node cursor",
				"consumer", s.consumerLabel(), "cursor", since, "missing", gap.Missing, "next_delivered", gap.Next)
			s.posKnown = false
			continue
		}
		why := fmt.Sprintf("the consumer skipped it again after being repositioned %d times (is another process consuming as this node?)", maxRepositions)
		if gap.Reason != "" {
			why = gap.Reason + "; " + why
		}
		gap.Reason = why
		return nil, gap
	}
}

// fetchEvents fetches once and returns the contiguous events after since.
// gap is set, with no events, when the first delivered position after
// since leaves out a message the stream holds.
func (s *Source) fetchEvents(ctx context.Context, since uint64) ([]controlevent.Event, *feed.GapError, error) {
	if s.sess == nil {
		ss, err := newSession(s.c, s.cons.CachedInfo().Name)
		if err != nil {
			return nil, nil, fmt.Errorf("natsfeed: poll %d: %w", since, err)
		}
		s.sess = ss
		s.live.Store(ss)
	}
	r, err := s.sess.take(ctx, s.c, s.c.opts.FetchBatch)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, fmt.Errorf("natsfeed: poll %d: fetch from consumer %q: %w", since, s.consumerLabel(), err)
	}
	var (
		evs    []controlevent.Event
		msgs   = make(map[uint64]*nats.Msg, len(r.msgs))
		maxSeq = since
		bad    *feed.InvalidEventError // the first invalid message, if any
	)
	for _, m := range r.msgs {
		if s.dropHook != nil && s.dropHook(m) {
			continue
		}
		md, err := m.Metadata()
		if err != nil {
			return nil, nil, fmt.Errorf("natsfeed: poll %d: message metadata: %w", since, err)
		}
		seq := md.Sequence.Stream
		maxSeq = max(maxSeq, seq)
		if seq <= since {
			// A redelivery of an event the node applied already.
			if !s.ephemeral {
				_ = s.ack(m.Reply)
			}
			continue
		}
		if _, dup := msgs[seq]; dup {
			msgs[seq] = m
			continue
		}
		if bad != nil && seq > bad.ControlVersion {
			continue // after an invalid message: delivered again later
		}
		e, err := DecodeMessage(seq, m.Header, m.Data)
		if err != nil {
			if bad == nil || seq < bad.ControlVersion {
				bad = s.invalidEvent(seq, m.Header, err)
			}
			continue
		}
		msgs[seq] = m
		evs = append(evs, e)
	}
	slices.SortFunc(evs, func(a, b controlevent.Event) int { return cmpU64(a.ControlVersion, b.ControlVersion) })

	// The delivered positions after since, valid or not, must be
	// contiguous up to what the stream no longer holds.
	positions := make([]uint64, 0, len(evs)+1)
	for _, e := range evs {
		if bad != nil && e.ControlVersion > bad.ControlVersion {
			break
		}
		positions = append(positions, e.ControlVersion)
	}
	if bad != nil {
		i, _ := slices.BinarySearch(positions, bad.ControlVersion)
		positions = slices.Insert(positions[:i], i, bad.ControlVersion)
	}
	end, missing, err := s.contiguous(ctx, since, positions)
	if err != nil {
		return nil, nil, err
	}
	if missing != 0 {
		if end == since {
			s.posKnown = false
			return nil, &feed.GapError{Source: Name, Cursor: since, Next: positions[0], Missing: missing}, nil
		}
		// Deliver what precedes the hole; the next Poll (from end, or
		// from an earlier cursor) repositions the consumer.
		s.posKnown = false
	}
	// An incomplete answer is no reason to reposition: whatever else the
	// consumer delivered to the session arrives later, in order.
	evs = evsThrough(evs, end)
	if bad != nil && bad.ControlVersion > end {
		bad = nil
	}
	if len(positions) == 0 && r.complete {
		missing, err := s.checkNothingSkipped(ctx, since)
		if err != nil {
			return nil, nil, err
		}
		if missing != 0 {
			s.posKnown = false
			return nil, &feed.GapError{Source: Name, Cursor: since, Next: missing + 1, Missing: missing,
				Reason: "the consumer delivered nothing although the stream holds it"}, nil
		}
	}
	if len(positions) > 0 && positions[0] > since+1 {
		// Positions right after the cursor are gone: deleted messages,
		// another subject, or retention. Only the last one is an error.
		if err := s.checkRetention(ctx, since); err != nil {
			return nil, nil, err
		}
	}
	if bad != nil {
		// Deliver the valid events before the invalid message; report it
		// only once it is next. The consumer has delivered past what is
		// returned, so the next Poll repositions it (see sync).
		evs = evsThrough(evs, bad.ControlVersion-1)
		if len(evs) == 0 {
			return nil, nil, fmt.Errorf("natsfeed: poll %d: stream %q: %w", since, s.c.cfg.Stream, bad)
		}
		s.posKnown = false
	}
	if !s.ephemeral {
		for _, e := range evs {
			s.held[e.EventID] = heldMsg{reply: msgs[e.ControlVersion].Reply, seq: e.ControlVersion}
		}
	}
	if s.posKnown {
		s.pos = maxSeq
		s.livePos.Store(maxSeq)
		if r.complete && len(r.msgs) < s.c.opts.FetchBatch {
			s.sess.startTailing()
		}
		s.sess.keepTail(s.tailExpires())
	} else {
		s.endSession() // the next Poll repositions the consumer
	}
	return evs, nil, nil
}

// tailExpires is the expiry of the session's tail request: for a durable
// Source at most what is left of the lease (see session).
func (s *Source) tailExpires() time.Duration {
	if s.lease == nil {
		return tailExpiresMax
	}
	return min(tailExpiresMax, s.lease.validFor())
}

// endSession ends the reading session, if any (s.mu held).
func (s *Source) endSession() {
	if s.sess != nil {
		s.sess.close()
		s.sess = nil
		s.live.Store(nil)
	}
}

// evsThrough returns the prefix of the ascending evs at or below cv.
func evsThrough(evs []controlevent.Event, cv uint64) []controlevent.Event {
	i := 0
	for i < len(evs) && evs[i].ControlVersion <= cv {
		i++
	}
	return evs[:i]
}

// contiguous walks the ascending delivered positions from since and returns
// the last one before the first hole that leaves out a message the stream
// holds (end; since if the first position is already past one), and that
// message's sequence (0 when there is no such hole: end is then the last
// position, or since).
func (s *Source) contiguous(ctx context.Context, since uint64, positions []uint64) (end, missing uint64, err error) {
	end = since
	for _, p := range positions {
		if p > end+1 {
			held, err := s.firstHeld(ctx, end, p)
			if err != nil {
				return end, 0, fmt.Errorf("natsfeed: poll %d: check positions %d..%d: %w", since, end+1, p-1, err)
			}
			if held != 0 {
				return end, held, nil
			}
		}
		end = p
	}
	return end, 0, nil
}

// checkNothingSkipped runs after a complete fetch that delivered nothing
// after since. If the stream's head is known to be past since (Wait read
// it, or the last sync did) and has not been checked yet, it asks the
// stream for the first message on the subject after since and returns it:
// a message the consumer should have delivered but did not (it went to an
// abandoned request), so Poll repositions the consumer.
// The check is made once per head: a stream whose tail is deleted or on
// another subject costs one request, not one per Poll.
func (s *Source) checkNothingSkipped(ctx context.Context, since uint64) (missing uint64, err error) {
	head := s.headHint()
	if head <= since || head <= s.wake.settled.Load() {
		return 0, nil
	}
	held, err := s.firstHeld(ctx, since, head+1)
	if err != nil {
		return 0, fmt.Errorf("natsfeed: poll %d: check positions %d..%d: %w", since, since+1, head, err)
	}
	if held == 0 {
		s.wake.settled.Store(head)
	}
	return held, nil
}

// headHint is the highest stream sequence the Source has seen the stream
// hold (by Wait or by the last sync).
func (s *Source) headHint() uint64 { return max(s.syncHead, s.wake.head.Load()) }

// firstHeld returns the lowest stream sequence in (after, before) that holds
// a message on the feed's subject, or 0 if there is none (all deleted, or on
// other subjects). One request to the stream.
func (s *Source) firstHeld(ctx context.Context, after, before uint64) (uint64, error) {
	if before <= after+1 {
		return 0, nil
	}
	rctx, cancel := s.c.reqCtx(ctx)
	defer cancel()
	st := s.st
	if st == nil {
		var err error
		if st, err = s.c.js.Stream(rctx, s.c.cfg.Stream); err != nil {
			return 0, fmt.Errorf("stream %q: %w", s.c.cfg.Stream, err)
		}
		s.st = st
	}
	m, err := st.GetMsg(rctx, after+1, jetstream.WithGetMsgSubject(s.c.cfg.Subject))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("get the first message after %d on %q: %w", after, s.c.cfg.Subject, err)
	}
	if m.Sequence < before {
		return m.Sequence, nil
	}
	return 0, nil
}

// CheckGap implements feed.GapChecker: it returns nil if no stream sequence
// in (cursor, next) holds a message on the feed's subject (they were
// deleted: purged, expired by retention, removed by an operator, or they
// are messages on another subject of a shared stream, which are not part of
// the feed), and a *feed.GapError naming the lowest one still held
// otherwise. It costs one request. It fails with an error wrapping
// feed.ErrUnavailable when the server does not answer, and with
// feed.ErrClosed after Close. It is safe to call concurrently with Poll.
func (s *Source) CheckGap(ctx context.Context, cursor, next uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("natsfeed: check gap %d..%d: %w", cursor, next, feed.ErrClosed)
	}
	held, err := s.firstHeld(ctx, cursor, next)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return err
		}
		return classify(ctx, fmt.Errorf("natsfeed: check gap %d..%d: %w", cursor, next, err))
	}
	if held != 0 {
		return &feed.GapError{Source: Name, Cursor: cursor, Next: next, Missing: held, Reason: "the stream still holds it"}
	}
	return nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// sync reconciles the consumer with since: it checks retention and reuses
// the durable consumer only if it delivered exactly up to since with the
// expected configuration, else recreates it at since+1. It fails with an
// error wrapping ErrNoStream when the stream does not exist.
func (s *Source) sync(ctx context.Context, since uint64) (ok bool, err error) {
	// Whatever the session had delivered is stale once the consumer moves.
	s.endSession()
	rctx, cancel := s.c.reqCtx(ctx)
	defer cancel()
	st, err := s.c.js.Stream(rctx, s.c.cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if since > 0 {
			s.c.log.Warn("natsfeed: the stream does not exist but the node cursor is past 0; was the stream deleted?", "cursor", since)
		}
		s.cons, s.st, s.held = nil, nil, map[string]heldMsg{}
		return false, noStreamError(s.c.cfg.Stream)
	}
	if err != nil {
		return false, fmt.Errorf("natsfeed: poll %d: stream %q: %w", since, s.c.cfg.Stream, err)
	}
	// A stream that stores none of the subject would be read as empty. (A
	// mirror or a sourced stream lists no subjects of its own: not checked.)
	if subjects := st.CachedInfo().Config.Subjects; len(subjects) > 0 && !slices.ContainsFunc(subjects, func(p string) bool { return subjectMatches(p, s.c.cfg.Subject) }) {
		s.cons, s.st, s.held = nil, nil, map[string]heldMsg{}
		return false, wrongSubjectError(s.c.cfg.Stream, subjects, s.c.cfg.Subject)
	}
	s.st = st
	state := st.CachedInfo().State
	s.syncHead = state.LastSeq
	if err := s.retentionError(since, state); err != nil {
		return false, err
	}
	if since > state.LastSeq {
		s.c.log.Warn("natsfeed: the node cursor is ahead of the stream's last sequence; the stream may have been recreated, in which case this node must be re-bootstrapped",
			"cursor", since, "last_seq", state.LastSeq)
	}
	cons, err := s.position(rctx, st, since)
	if err != nil {
		s.cons = nil
		return false, err
	}
	s.cons, s.pos, s.posKnown = cons, since, true
	return true, nil
}

// position returns the durable consumer positioned to deliver since+1 next,
// with nothing pending. In order of preference: the existing consumer if it
// delivered exactly through since; the existing consumer reset to since+1
// (the consumer reset API, nats-server 2.14+); a new consumer reset to
// since+1; and, if the server does not support reset, a consumer deleted
// and recreated with start sequence since+1.
func (s *Source) position(ctx context.Context, st jetstream.Stream, since uint64) (jetstream.Consumer, error) {
	s.held = map[string]heldMsg{} // handles of a reset or recreated consumer are stale
	if s.ephemeral {
		return s.positionEphemeral(ctx, st, since)
	}
	cons, err := st.Consumer(ctx, s.durable)
	switch {
	case err == nil && s.compatible(cons.CachedInfo().Config):
		info := cons.CachedInfo()
		if info.Delivered.Stream == since {
			return cons, nil
		}
		s.c.log.Debug("natsfeed: resetting the consumer to the node cursor", "consumer", s.durable,
			"cursor", since, "consumer_delivered", info.Delivered.Stream)
		if s.reset(ctx, st, since) == nil {
			return cons, nil
		}
	case err == nil:
		s.c.log.Warn("natsfeed: the consumer's configuration differs; recreating it", "consumer", s.durable)
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		cons, err := st.CreateConsumer(ctx, s.consumerConfig(jetstream.DeliverAllPolicy, 0))
		if err != nil {
			return nil, fmt.Errorf("natsfeed: poll %d: create consumer %q: %w", since, s.durable, err)
		}
		if since == 0 || s.reset(ctx, st, since) == nil {
			return cons, nil
		}
	default:
		return nil, fmt.Errorf("natsfeed: poll %d: consumer %q: %w", since, s.durable, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Fallback: delete and recreate at since+1.
	if err := st.DeleteConsumer(ctx, s.durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("natsfeed: poll %d: delete consumer %q: %w", since, s.durable, err)
	}
	cons, err = st.CreateConsumer(ctx, s.consumerConfig(jetstream.DeliverByStartSequencePolicy, since+1))
	if err != nil {
		return nil, fmt.Errorf("natsfeed: poll %d: create consumer %q at sequence %d: %w", since, s.durable, since+1, err)
	}
	return cons, nil
}

// positionEphemeral replaces the ephemeral consumer (if any) by a new one
// starting at since+1.
func (s *Source) positionEphemeral(ctx context.Context, st jetstream.Stream, since uint64) (jetstream.Consumer, error) {
	if s.cons != nil {
		// Best effort: the server drops it after the inactive threshold anyway.
		_ = st.DeleteConsumer(ctx, s.cons.CachedInfo().Name)
		s.cons = nil
	}
	cons, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Description:       "controlfeed read-only observer (tail)",
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       since + 1,
		AckPolicy:         jetstream.AckNonePolicy,
		MaxDeliver:        -1,
		FilterSubject:     s.c.cfg.Subject,
		ReplayPolicy:      jetstream.ReplayInstantPolicy,
		InactiveThreshold: EphemeralInactiveThreshold,
		MemoryStorage:     true,
	})
	if err != nil {
		return nil, fmt.Errorf("natsfeed: poll %d: create ephemeral consumer at sequence %d: %w", since, since+1, err)
	}
	return cons, nil
}

func (s *Source) reset(ctx context.Context, st jetstream.Stream, since uint64) error {
	_, err := st.ResetConsumerToSequence(ctx, s.durable, since+1)
	if err != nil {
		s.c.log.Debug("natsfeed: consumer reset failed", "consumer", s.durable, "seq", since+1, "err", err)
	}
	return err
}

func (s *Source) consumerConfig(policy jetstream.DeliverPolicy, start uint64) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       s.durable,
		Description:   "controlfeed node " + s.c.cfg.NodeName,
		DeliverPolicy: policy,
		OptStartSeq:   start,
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       s.c.opts.AckWait,
		MaxDeliver:    -1,
		FilterSubject: s.c.cfg.Subject,
		MaxAckPending: s.c.opts.MaxAckPending,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
	}
}

func (s *Source) compatible(c jetstream.ConsumerConfig) bool {
	return c.FilterSubject == s.c.cfg.Subject && len(c.FilterSubjects) == 0 &&
		c.AckPolicy == jetstream.AckAllPolicy &&
		(c.DeliverPolicy == jetstream.DeliverAllPolicy || c.DeliverPolicy == jetstream.DeliverByStartSequencePolicy)
}

func (s *Source) retentionError(since uint64, state jetstream.StreamState) error {
	if since+1 < state.FirstSeq && since+1 <= state.LastSeq {
		return &feed.CursorBehindError{Source: Name, Cursor: since, FirstAvailable: state.FirstSeq}
	}
	return nil
}

func (s *Source) checkRetention(ctx context.Context, since uint64) error {
	rctx, cancel := s.c.reqCtx(ctx)
	defer cancel()
	st, err := s.c.js.Stream(rctx, s.c.cfg.Stream)
	if err != nil {
		return fmt.Errorf("natsfeed: poll %d: stream %q: %w", since, s.c.cfg.Stream, err)
	}
	return s.retentionError(since, st.CachedInfo().State)
}

// Ack acknowledges the event eventID, and with it every event delivered
// before it: the consumer uses AckAll, which matches the applier's rule of
// acknowledging only committed events, in order. The ack is sent without
// waiting for the server's confirmation (no round trip): an ack lost to a
// disconnect or a broker restart only means the server redelivers those
// events after the consumer's AckWait, and the applier's applied_events
// guard makes that a no-op (the next Poll acknowledges such redeliveries
// again). An event the Source does not hold (never delivered, already
// acknowledged, or delivered before the consumer was recreated or the
// Source reopened) returns nil. On error (the message could not be sent)
// the handle is kept and Ack may be retried.
func (s *Source) Ack(ctx context.Context, eventID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("natsfeed: ack %q: %w", eventID, feed.ErrClosed)
	}
	h, ok := s.held[eventID]
	if !ok {
		return nil
	}
	if err := s.ack(h.reply); err != nil {
		return fmt.Errorf("natsfeed: ack %q (stream sequence %d): %w", eventID, h.seq, err)
	}
	for id, o := range s.held {
		if o.seq <= h.seq {
			delete(s.held, id)
		}
	}
	return nil
}

// AckThrough acknowledges eventID and every event delivered before it with
// one message. It is Ack: with AckAll every ack is cumulative.
func (s *Source) AckThrough(ctx context.Context, eventID string) error {
	return s.Ack(ctx, eventID)
}

// Recovered implements feed.Recoverer: the channel is closed when the
// connection reconnects or a JetStream stream or consumer leader is elected
// (see the package doc). After Close it is never closed.
func (s *Source) Recovered() <-chan struct{} { return s.c.Recovered() }

// Head returns the stream's last sequence (0 when the stream is empty or
// does not exist).
func (s *Source) Head(ctx context.Context) (uint64, error) {
	if s.isClosed() {
		return 0, fmt.Errorf("natsfeed: head: %w", feed.ErrClosed)
	}
	rctx, cancel := s.c.reqCtx(ctx)
	defer cancel()
	st, err := s.c.js.Stream(rctx, s.c.cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("natsfeed: head: stream %q%s: %w", s.c.cfg.Stream, s.c.timeoutState(err), err)
	}
	return st.CachedInfo().State.LastSeq, nil
}

func (s *Source) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close forgets the held ack handles (their events are redelivered to the
// next Source for this node), releases the node name's lease (so another
// process for this node takes over at once; best effort, bounded by
// RequestTimeout and 2s) and closes the connection if the Source opened it.
// The durable consumer stays on the server. Later calls fail with
// feed.ErrClosed. Close is idempotent.
func (s *Source) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.held = nil
	s.endSession()
	s.wake.close()
	if s.lease != nil {
		s.lease.close()
	}
	s.c.close()
	return nil
}

// invalidEvent describes the invalid message at seq. Its EventID is the
// Nats-Msg-Id header when that is a usable id, else a placeholder.
func (s *Source) invalidEvent(seq uint64, hdr nats.Header, err error) *feed.InvalidEventError {
	id := hdr.Get(jetstream.MsgIDHeader)
	probe := controlevent.Event{EventID: id, Type: "probe", ControlVersion: 1}
	if id == "" || probe.Validate() != nil {
		id = feed.UnreadableEventID(seq)
	}
	return &feed.InvalidEventError{Source: Name, ControlVersion: seq, EventID: id, Err: err}
}
