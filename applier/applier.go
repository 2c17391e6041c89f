package applier

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/internal/backoff"
	"github.com/controlfeed/controlfeed/internal/failpoint"
	"github.com/controlfeed/controlfeed/trust"
)

// headEvery is the least time between two feed.HeadReporter calls.
const headEvery = time.Second

// prefetchBudget bounds the payload bytes held in memory for one batch; a
// batch always takes at least one event.
const prefetchBudget = 64 << 20

// Applier applies a feed's events to a node's database. Create it with New;
// run it with Run (or drive it with Step). Status is safe to call
// concurrently with either; Run and Step must not run concurrently with each
// other (Step serialises such calls).
type Applier struct {
	db    *sql.DB
	src   feed.Source
	store artifact.Store
	cfg   Config
	log   *slog.Logger

	acker    feed.Acker
	cumAcker feed.CumulativeAcker
	waiter   feed.Waiter
	header   feed.HeadReporter
	gapper   feed.GapChecker
	recov    feed.Recoverer // nil when the Source cannot tell recoveries

	stepMu    sync.Mutex // serialises Step
	loaded    bool       // persisted halt loaded into st
	lastHead  time.Time
	headLow   int // consecutive head reads below the cursor
	errStreak int // consecutive unclassified Step errors, for Run's backoff
	// backoffBase is the retry count at the last recovery the Source
	// reported: Run's backoff counts the attempts since then.
	backoffBase int

	// rest holds the events of the last Poll that came after the last
	// batch (cut by MaxBatch or the prefetch budget); the next Step applies
	// them without polling if the cursor is still restAfter.
	rest      []controlevent.Event
	restAfter uint64
	// invalid is the feed's report of an invalid message at the next
	// position, during the Step that halts on it.
	invalid *feed.InvalidEventError
	// next fetches the payloads of rest's first events in the background
	// (see ahead.go); nil when none is running.
	next *ahead
	// lastPollFull reports that the last Poll returned at least MaxBatch
	// events: a backlog, so apply polls ahead (see pollAhead).
	lastPollFull bool
	// warnedUnverified: a node without a keyring has logged, once, that
	// the feed it applies is signed.
	warnedUnverified bool
	// restChecked holds the signature checks of rest's events, one per
	// event and in order, made with the keyring restRing by the poll ahead
	// that fetched rest or by the apply of the batch before it; nil when
	// none was made. checkedAhead is restChecked handed from poll to the
	// apply of the same Step (nil otherwise).
	restChecked  []trust.Result
	restRing     *trust.Keyring
	checkedAhead []trust.Result
	checkedRing  *trust.Keyring

	// m holds the histograms of Config.Registerer (nil without one).
	m *metrics
	// chain is the state digest this applier last committed, so the next
	// transaction need not read it (see advanceCursor); nil when unknown.
	// Guarded by stepMu.
	chain *chain
	// trustHead is the trust chain head this applier last committed (nil:
	// read it from the database first). Only used with Config.Keyring.
	trustHead *trust.Head
	// ring is Config.Keyring with the keys the feed added and revoked
	// (nil: read them from the database first).
	ring *trust.Keyring

	// w is Run's dedicated write connection and checkpointer (see
	// checkpoint.go); nil outside Run. Guarded by stepMu.
	w *writer

	mu sync.Mutex // guards st and calls
	st Status
	// calls are the feed and store calls in flight, by a sequence number
	// (see deadline.go).
	calls   map[uint64]inFlight
	callSeq uint64
}

// New returns an Applier that applies src's events to db (which must have
// been migrated with Migrate and with the handlers' own tables), fetching
// payloads from store. store may be nil if no event carries an artifact; an
// event with an ArtifactRef then halts the applier. cfg may be nil. New
// detects the Source's optional interfaces (feed.Acker, feed.CumulativeAcker,
// feed.Waiter, feed.HeadReporter, feed.GapChecker) once, here. It does no
// I/O.
func New(db *sql.DB, src feed.Source, store artifact.Store, cfg *Config) (*Applier, error) {
	if db == nil {
		return nil, errors.New("applier: new: nil *sql.DB")
	}
	if src == nil {
		return nil, errors.New("applier: new: nil feed.Source")
	}
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c.setDefaults()
	handlers := make(map[string]Handler, len(c.Handlers))
	for k, v := range c.Handlers {
		handlers[k] = v
	}
	c.Handlers = handlers
	m, err := newMetrics(c.Registerer)
	if err != nil {
		return nil, err
	}
	a := &Applier{db: db, src: src, store: store, cfg: c, log: c.Logger, m: m}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.log = a.log.With("component", "applier", "source", src.Name())
	a.acker, _ = src.(feed.Acker)
	a.cumAcker, _ = src.(feed.CumulativeAcker)
	a.waiter, _ = src.(feed.Waiter)
	a.recov, _ = src.(feed.Recoverer)
	a.header, _ = src.(feed.HeadReporter)
	a.gapper, _ = src.(feed.GapChecker)
	return a, nil
}

// Status returns a snapshot of the applier's in-memory state. It is safe to
// call concurrently with Run and Step.
func (a *Applier) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.st
	s.Waiting, s.WaitingSince = a.oldestCall()
	if s.Halted != nil {
		h := *s.Halted
		s.Halted = &h
	}
	if s.BehindRetention != nil {
		b := *s.BehindRetention
		s.BehindRetention = &b
	}
	if s.Unavailable != nil {
		u := *s.Unavailable
		s.Unavailable = &u
	}
	if s.Gap != nil {
		g := *s.Gap
		s.Gap = &g
	}
	return s
}

// Run applies events until ctx is done, then returns nil. It waits for new
// events with feed.Waiter when the Source implements it, else polls every
// PollInterval; after a round that moved the cursor it polls again at once.
// A halted event, an unavailable feed, store or database, and a gap in the
// feed are retried with capped exponential backoff and jitter (by their
// attempt count, see Status); a node behind the feed's retention re-checks
// every MaxBackoff. When the Source implements feed.Recoverer, an outage
// or a failed round is retried as soon as it reports that its broker came
// back, and the backoff starts over from MinBackoff. Run returns a non-nil error only if the database cannot
// be read at start (for example, Migrate was not run).
func (a *Applier) Run(ctx context.Context) error {
	if _, err := ReadCursor(ctx, a.db); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if w := a.startWriter(ctx); w != nil {
		a.stepMu.Lock()
		a.w = w
		a.stepMu.Unlock()
		defer func() {
			a.stepMu.Lock()
			a.w = nil
			a.stepMu.Unlock()
			w.stop(a)
		}()
	}
	var tick *time.Ticker
	if a.waiter == nil {
		tick = time.NewTicker(a.cfg.PollInterval)
		defer tick.Stop()
	}
	for {
		var recovered <-chan struct{}
		if a.recov != nil {
			recovered = a.recov.Recovered() // before the Step: a recovery during it counts
		}
		n, err := a.Step(ctx)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err == nil:
			a.errStreak = 0
			if n > 0 {
				continue
			}
			if a.waiter != nil {
				if werr := a.wait(ctx); werr != nil && ctx.Err() == nil {
					a.log.Warn("applier: wait for new events failed", "err", werr)
					sleep(ctx, a.cfg.PollInterval)
				}
				continue
			}
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
		case errors.Is(err, feed.ErrCursorBehindRetention):
			sleep(ctx, a.cfg.MaxBackoff)
		case errors.Is(err, ErrUnavailable):
			a.errStreak = 0
			a.retrySleep(ctx, a.attempts(), recovered)
		case errors.Is(err, ErrHalted), errors.Is(err, feed.ErrGap):
			a.errStreak = 0
			sleep(ctx, a.backoff(a.attempts()))
		default:
			a.errStreak++
			a.log.Warn("applier: round failed; retrying", "err", err, "attempt", a.errStreak)
			a.retrySleep(ctx, a.errStreak, recovered)
		}
	}
}

// retrySleep sleeps out the backoff of retry number attempts, counted from
// the last recovery the Source reported, or until recovered is closed (the
// broker came back): then it returns at once and the backoff starts over.
func (a *Applier) retrySleep(ctx context.Context, attempts int, recovered <-chan struct{}) {
	if attempts <= a.backoffBase {
		a.backoffBase = 0 // a new outage, or a new streak
	}
	t := time.NewTimer(a.backoff(attempts - a.backoffBase))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	case <-recovered:
		a.log.Info("applier: the feed's broker recovered; retrying now, backoff starts over", "attempts", attempts)
		a.backoffBase = attempts
	}
}

// backoff returns the delay before retry number attempts (1-based), by the
// policy shared with the pump (internal/backoff).
func (a *Applier) backoff(attempts int) time.Duration {
	return backoff.Delay(attempts, a.cfg.MinBackoff, a.cfg.MaxBackoff)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// item is one event planned for the apply transaction.
type item struct {
	ev       controlevent.Event
	payload  []byte
	outcome  string // set in the transaction: "applied", or the recorded outcome of a duplicate
	dup      bool
	idx      int        // position in the polled slice
	fetch    bool       // payload still to be fetched
	known    bool       // found in controlfeed_applied_events before the transaction
	evDigest string     // EventDigest(ev), once computed
	trust    trust.Head // the trust chain head after this item (with Config.Keyring)
}

// digest returns EventDigest(it.ev), computing it once.
func (it *item) digest() string {
	if it.evDigest == "" {
		it.evDigest = EventDigest(it.ev)
	}
	return it.evDigest
}

// Step performs one round: it reads the cursor, polls the Source once, and
// applies what it returned (at most MaxBatch events, in one transaction). It
// returns the number of events the cursor moved past (applied, duplicates
// and skipped). If an event fails, the events before it are committed and
// Step returns an error wrapping ErrHalted (the event cannot be applied),
// ErrUnavailable (the feed, the store or the database failed) or feed.ErrGap
// (the feed skipped a position it holds); see State. Calling Step again
// retries. Step is for tests and tools; Run calls it in a loop.
func (a *Applier) Step(ctx context.Context) (int, error) {
	a.stepMu.Lock()
	defer a.stepMu.Unlock()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if !a.loaded {
		h, err := readHalt(ctx, a.db)
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			return 0, a.settle(ctx, &failure{op: OpReadDB, err: fmt.Errorf("applier: %w (has Migrate run?)", err)})
		}
		a.mu.Lock()
		a.st.Halted = h
		a.mu.Unlock()
		a.loaded = true
	}
	cursor, err := ReadCursor(ctx, a.db)
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, a.settle(ctx, &failure{op: OpReadDB, err: err})
	}
	a.mu.Lock()
	a.st.Cursor = cursor
	a.mu.Unlock()
	a.refreshHead(ctx)

	evs, err := a.poll(ctx, cursor)
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		var ie *feed.InvalidEventError
		if errors.As(err, &ie) && ie.ControlVersion > cursor {
			// Halt at the invalid message like at any invalid event, so
			// it is visible and an operator can skip it by its id.
			a.invalid = ie
			defer func() { a.invalid = nil }()
			return a.apply(ctx, cursor, []controlevent.Event{{EventID: ie.EventID, ControlVersion: ie.ControlVersion}})
		}
		// Behind retention, a gap, or the feed failing to answer.
		return 0, a.settle(ctx, &failure{op: OpPoll, err: fmt.Errorf("applier: poll %s after control version %d: %w", a.src.Name(), cursor, err)})
	}
	return a.apply(ctx, cursor, evs)
}

// poll returns the events left over from the previous Poll when the cursor
// is where that batch ended (no Skip or SetCursor moved it since), else
// polls the Source.
func (a *Applier) poll(ctx context.Context, cursor uint64) ([]controlevent.Event, error) {
	rest, checked, ring := a.rest, a.restChecked, a.restRing
	a.rest, a.restChecked, a.restRing = nil, nil, nil
	a.checkedAhead, a.checkedRing = nil, nil
	if len(rest) > 0 && cursor == a.restAfter {
		a.checkedAhead, a.checkedRing = checked, ring
		return rest, nil
	}
	a.next = nil // its payloads were for rest
	var evs []controlevent.Event
	err := a.call(ctx, func() string { return fmt.Sprintf("poll of feed %s after %d", a.src.Name(), cursor) }, func(ctx context.Context) (err error) {
		evs, err = a.src.Poll(ctx, cursor)
		return err
	})
	a.lastPollFull = err == nil && len(evs) >= a.cfg.MaxBatch
	return evs, err
}

func (a *Applier) refreshHead(ctx context.Context) {
	if a.header == nil || time.Since(a.lastHead) < headEvery {
		return
	}
	a.lastHead = time.Now()
	var h uint64
	err := a.call(ctx, func() string { return "read of feed " + a.src.Name() + "'s head" }, func(ctx context.Context) (err error) {
		h, err = a.header.Head(ctx)
		return err
	})
	if err != nil {
		a.log.Debug("applier: read feed head", "err", err)
		if ctx.Err() == nil {
			a.mu.Lock()
			a.st.HeadError = err.Error()
			if a.st.HeadErrorSince.IsZero() {
				a.st.HeadErrorSince = time.Now()
			}
			a.mu.Unlock()
		}
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.st.Head, a.st.HeadKnown = h, true
	a.st.HeadError, a.st.HeadErrorSince = "", time.Time{}
	// The head was read after the cursor (Step reads the cursor first), so
	// a head below it is not staleness.
	cursor := a.st.Cursor
	if h >= cursor {
		// Once reported it stays: a recreated feed's head passing the
		// cursor later does not bring back the events it skipped.
		a.headLow = 0
		return
	}
	if a.headLow++; a.headLow < 2 || a.st.FeedBehindCursor != "" {
		return // a second read confirms it: not a broker that is still starting
	}
	a.st.FeedBehindCursor = fmt.Sprintf("feed %s: its head is at control version %d, below this node's cursor %d: the feed was recreated (positions restart) or lost its newest events, and events it stores at positions up to %d would never be applied here; re-bootstrap this node from a healthy node's database (see the README)",
		a.src.Name(), h, cursor, cursor)
	a.log.Error("applier: "+a.st.FeedBehindCursor, "head", h, "cursor", cursor)
}

// apply plans, fetches, commits and acknowledges one polled batch, and
// settles the round.
func (a *Applier) apply(ctx context.Context, cursor uint64, evs []controlevent.Event) (int, error) {
	var (
		old  []controlevent.Event // redelivered events at or before the cursor
		plan []item
		fail *failure
		prev = cursor
	)
	// Which events are already recorded, in one query: only events that
	// need to know it before the transaction (invalid, no handler, an
	// artifact to fetch) use the answer; the transaction rechecks.
	known, lerr := a.lookupBatch(ctx, cursor, evs)
	if lerr != nil && ctx.Err() != nil {
		return 0, ctx.Err()
	}
	if a.cfg.Keyring == nil && !a.warnedUnverified && len(evs) > 0 && strings.Contains(evs[len(evs)-1].Extra, `"`+trust.SignatureMember+`":`) {
		a.warnedUnverified = true
		a.log.Warn("applier: the feed's events are signed, but this node trusts no key and verifies none of them: a forged event would be applied; "+
			"give it the producer's public key (serve --trust-key, Config.Keyring) to verify (docs/SECURITY.md)",
			"event_id", evs[len(evs)-1].EventID, "control_version", evs[len(evs)-1].ControlVersion)
	}
	var head trust.Head
	var planned map[string]bool // EventIDs planned in this batch, for verify
	var checked []trust.Result  // the signature checks of evs[first:]
	var ring *trust.Keyring     // the keys trusted in this round
	first := 0
	if a.cfg.Keyring != nil {
		planned = make(map[string]bool)
		var err error
		if head, ring, err = a.trustState(ctx); err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			return 0, a.settle(ctx, &failure{evs[0], OpReadDB, err})
		}
		for first < len(evs) && evs[first].ControlVersion <= cursor {
			first++
		}
		// One check of the whole Poll: an unbroken chain costs one
		// signature verification (trust.Keyring.VerifyAll), and the
		// batches after this one in the same Poll reuse it (restChecked).
		// A poll ahead may have made it already, while the previous batch
		// committed, with the same keys (a key event in that batch makes
		// a new keyring, and the checks are made again).
		if first == 0 && a.checkedRing == ring && len(a.checkedAhead) == len(evs) {
			checked = a.checkedAhead
		} else {
			checked = ring.VerifyAll(evs[first:])
		}
	}
	for i, ev := range evs {
		if len(plan) >= a.cfg.MaxBatch {
			break
		}
		if ev.ControlVersion == 0 {
			fail = &failure{ev, opValidate, a.eventErr(ev, "validate", ev.Validate())}
			break
		}
		if ev.ControlVersion <= cursor && len(plan) == 0 {
			old = append(old, ev)
			continue
		}
		if ev.ControlVersion <= prev {
			fail = &failure{ev, opValidate, fmt.Errorf("applier: source %s returned control version %d for event %q after %d: events are not strictly ascending (a bug in the source)",
				a.src.Name(), ev.ControlVersion, ev.EventID, prev)}
			break
		}
		if a.gapper != nil && ev.ControlVersion != prev+1 {
			if fail = a.checkGap(ctx, prev, ev); fail != nil {
				break
			}
		}
		prev = ev.ControlVersion
		it := item{ev: ev, idx: i, known: known[ev.EventID]}
		if a.cfg.Keyring != nil {
			// Before anything else is done with the event.
			var r trust.Result
			if k := i - first; k >= 0 && k < len(checked) {
				r = checked[k]
			} else {
				r.Verified, r.Err = ring.Verify(ev)
			}
			if head, fail = a.verify(ev, r, it.known || planned[ev.EventID], lerr, head); fail != nil {
				if k := i - first; k >= 0 && k < len(checked) && fail.op == opVerify {
					if se := reordered(fail.err, head, evs[i+1:first+len(checked)], checked[k+1:]); se != nil {
						fail.err = a.eventErr(ev, "verify", se)
					}
				}
				break
			}
			it.trust = head
			planned[ev.EventID] = true
		}
		verr := ev.Validate()
		if a.invalid != nil && a.invalid.ControlVersion == ev.ControlVersion {
			verr = a.invalid
		}
		h := a.handler(ev.Type)
		if verr != nil || h == nil || ev.ArtifactRef != "" {
			// Only these cases need to know, before the transaction,
			// whether the event is already recorded.
			if lerr != nil {
				fail = &failure{ev, OpReadDB, a.eventErr(ev, "look up", lerr)}
				break
			}
			if it.known {
				plan = append(plan, it)
				continue
			}
		}
		if verr != nil {
			fail = &failure{ev, opValidate, a.eventErr(ev, "validate", verr)}
			break
		}
		if h == nil {
			fail = &failure{ev, opHandler, a.eventErr(ev, "apply", fmt.Errorf("no handler for event type %q", ev.Type))}
			break
		}
		it.fetch = ev.ArtifactRef != ""
		plan = append(plan, it)
		if trust.IsKeyEvent(ev.Type) && a.cfg.Keyring != nil {
			break // the events after it are verified with the keys it changes
		}
	}
	if a.next != nil {
		a.next.take(plan)
		a.next = nil
	}
	plan, cut, ffail := a.prefetch(ctx, plan)
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	if cut {
		// Cut short by a failed fetch or by the byte budget: an event that
		// failed planning lies past the cut and will be met again.
		fail = ffail
	}
	// While this batch commits, fetch the next one's payloads.
	var nextFetch *ahead
	if fail == nil && len(plan) > 0 {
		if i := plan[len(plan)-1].idx + 1; i < len(evs) {
			nextFetch = a.startAhead(ctx, evs[i:])
		}
	}
	// When this batch ends a full Poll, poll what follows it while it
	// commits, and fetch that batch's payloads too.
	var pa *pollAhead
	if fail == nil && len(plan) > 0 && plan[len(plan)-1].idx+1 == len(evs) && a.lastPollFull && a.invalid == nil {
		pa = a.startPollAhead(ctx, plan[len(plan)-1].ev.ControlVersion, ring)
		defer pa.wait() // the Source is called by one goroutine at a time
	}

	n, tfail, err := a.commit(ctx, plan)
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		// The transaction as a whole failed (not one event): nothing was
		// committed; settle at the first event so it is visible and
		// retried (classify: unavailable, unless SQLite blames the data).
		if len(plan) > 0 {
			return 0, a.settle(ctx, &failure{plan[0].ev, OpCommit, err})
		}
		return 0, err
	}
	if tfail != nil {
		fail = tfail
	}
	committed := plan[:n]
	a.mu.Lock()
	for _, it := range committed {
		switch {
		case !it.dup:
			a.st.Applied++
		case it.outcome == outcomeSkipped:
			a.st.Skipped++
		default:
			a.st.Duplicates++
		}
	}
	var resolved *Halt
	if n > 0 {
		last := committed[n-1].ev.ControlVersion
		a.st.Cursor = last
		a.st.LastApplyAt = time.Now()
		if a.st.Halted != nil && a.st.Halted.ControlVersion <= last {
			resolved, a.st.Halted = a.st.Halted, nil
		}
	}
	a.mu.Unlock()
	if resolved != nil {
		a.log.Info("applier: halted event resolved; resuming", "event_id", resolved.EventID,
			"control_version", resolved.ControlVersion, "attempts", resolved.Attempts)
	}

	acks := old
	for _, it := range committed {
		acks = append(acks, it.ev)
	}
	if n > 0 {
		if err := failpoint.Inject(failpoint.ApplierAfterCommitBeforeAck); err != nil {
			a.log.Warn("applier: acks not sent; the source will redeliver", "err", err)
			acks = nil
		}
	}
	if pa != nil {
		pa.wait() // before the ack: one Source call at a time
	}
	a.ack(ctx, acks)
	if fail == nil && n > 0 && n == len(plan) {
		if next := plan[n-1].idx + 1; next < len(evs) {
			a.rest, a.restAfter = slices.Clone(evs[next:]), plan[n-1].ev.ControlVersion
			a.next = nextFetch
			if k := next - first; a.cfg.Keyring != nil && k >= 0 && len(checked) == len(evs)-first {
				a.restChecked, a.restRing = slices.Clone(checked[k:]), ring
			}
		} else if pa != nil && pa.err == nil && len(pa.evs) > 0 {
			a.rest, a.restAfter, a.next = pa.evs, pa.after, pa.next
			a.restChecked, a.restRing = pa.checked, pa.ring
			a.lastPollFull = len(pa.evs) >= a.cfg.MaxBatch
		}
	}

	return n, a.settle(ctx, fail)
}

// verify runs the trust checks of Config.Keyring on ev, the event after
// head: r, the outcome of its signature check, and the chain's next link. It
// returns the head after ev, or the failure that stops the batch before it.
//
// An event already recorded in controlfeed_applied_events (known) changes
// nothing, so it passes whatever the checks say: a signed event republished
// after the broker's duplicate window (a replay of what the node applied),
// or one an operator skipped with SkipSecurityHalt. The chain then moves to
// it only if its signature is valid and it lies beyond the head's next seq
// (a chain-gap: the operator accepted the events missing before it). A
// skipped chain-fork (the right seq after another predecessor: an injected
// event, or a second chain) or replay leaves the head where it was, so the
// producer's own next event still follows on.
func (a *Applier) verify(ev controlevent.Event, r trust.Result, known bool, lerr error, head trust.Head) (trust.Head, *failure) {
	v, verr := r.Verified, r.Err
	err := verr
	if err == nil {
		if err = head.Check(ev.EventID, v); err == nil {
			return v.Head(), nil
		}
	}
	if lerr != nil {
		return head, &failure{ev, OpReadDB, a.eventErr(ev, "look up", lerr)}
	}
	if !known {
		return head, &failure{ev, opVerify, a.eventErr(ev, "verify", err)}
	}
	a.log.Warn("applier: an event that failed the trust checks is already recorded here; passing it as a duplicate, nothing applied",
		"event_id", ev.EventID, "control_version", ev.ControlVersion, "security", securityReason(err), "err", err)
	if verr == nil && v.Link.Seq > head.Seq+1 {
		return v.Head(), nil
	}
	return head, nil
}

// reordered returns err's chain-gap error completed with where the
// missing successor of head is, when it is among the events polled after
// the failing one (evs, with their signature checks res): the events are
// reordered, not only dropped. The reason stays chain-gap; the detail tells
// the operator which copy to move (docs/SECURITY.md). It returns nil when
// err is no chain gap or the successor is not among evs.
func reordered(err error, head trust.Head, evs []controlevent.Event, res []trust.Result) *trust.SecurityError {
	var se *trust.SecurityError
	if !errors.As(err, &se) || se.Reason != trust.ReasonChainGap {
		return nil
	}
	for j, r := range res {
		if j < len(evs) && r.Err == nil && r.Verified.Link.Seq == head.Seq+1 {
			c := *se
			c.Detail += fmt.Sprintf("; seq %d follows at control version %d: reordered", head.Seq+1, evs[j].ControlVersion)
			return &c
		}
	}
	return nil
}

// checkGap asks the feed, which promised dense positions, whether the
// positions between prev (the cursor or the previous event of the batch)
// and ev were deleted. It returns nil if they were, else the failure that
// stops the batch before ev: a gap (the feed still holds one of them) or an
// unavailable feed (it cannot tell).
func (a *Applier) checkGap(ctx context.Context, prev uint64, ev controlevent.Event) *failure {
	err := a.call(ctx, func() string {
		return fmt.Sprintf("gap check of feed %s between %d and %d", a.src.Name(), prev, ev.ControlVersion)
	}, func(ctx context.Context) error { return a.gapper.CheckGap(ctx, prev, ev.ControlVersion) })
	if err == nil {
		a.log.Debug("applier: positions deleted from the feed passed over", "after", prev, "next", ev.ControlVersion)
		return nil
	}
	if errors.Is(err, feed.ErrGap) {
		return &failure{ev, OpCheckGap, fmt.Errorf("applier: feed %s delivered event %q at control version %d after %d: %w",
			a.src.Name(), ev.EventID, ev.ControlVersion, prev, err)}
	}
	return &failure{ev, OpCheckGap, fmt.Errorf("applier: feed %s delivered event %q at control version %d after %d, and cannot tell whether the positions between were deleted: %w",
		a.src.Name(), ev.EventID, ev.ControlVersion, prev, err)}
}

func (a *Applier) eventErr(ev controlevent.Event, op string, err error) error {
	return fmt.Errorf("applier: %s event %q (control version %d, type %q): %w", op, ev.EventID, ev.ControlVersion, ev.Type, err)
}

// fetchWorkers bounds the artifact fetches in flight.
const fetchWorkers = 4

// prefetch fetches the payloads of plan's items that need one, up to
// fetchWorkers at a time, in order. It cuts plan after the item whose payload
// takes the total past prefetchBudget, or before the first item whose fetch
// failed (returning that failure); cut reports either. Several fetches run
// at once only while fetchWorkers payloads as large as the largest seen so
// far fit in what is left of the budget, so large payloads are fetched one
// at a time.
func (a *Applier) prefetch(ctx context.Context, plan []item) (_ []item, cut bool, fail *failure) {
	var bytes, largest int64
	errs := make([]error, len(plan))
	for i := 0; i < len(plan); {
		if !plan[i].fetch {
			i++
			continue
		}
		par := 1
		if largest > 0 && largest*fetchWorkers <= prefetchBudget-bytes {
			par = fetchWorkers
		}
		// The next par items needing a fetch, from i on.
		var wave []int
		for j := i; j < len(plan) && len(wave) < par; j++ {
			if plan[j].fetch {
				wave = append(wave, j)
			}
		}
		if len(wave) == 1 {
			plan[wave[0]].payload, errs[wave[0]] = a.fetch(ctx, plan[wave[0]].ev)
		} else {
			var wg sync.WaitGroup
			for _, j := range wave {
				wg.Go(func() { plan[j].payload, errs[j] = a.fetch(ctx, plan[j].ev) })
			}
			wg.Wait()
		}
		for j := i; j <= wave[len(wave)-1]; j++ {
			if !plan[j].fetch {
				continue
			}
			if errs[j] != nil {
				return plan[:j], true, &failure{plan[j].ev, OpFetch, errs[j]}
			}
			n := int64(len(plan[j].payload))
			bytes += n
			largest = max(largest, n)
			if bytes >= prefetchBudget && j+1 < len(plan) {
				return plan[:j+1], true, nil
			}
		}
		i = wave[len(wave)-1] + 1
	}
	return plan, false, nil
}

// lookupBatch returns which of the events after cursor that the next batch
// may hold are recorded in controlfeed_applied_events, in one query.
func (a *Applier) lookupBatch(ctx context.Context, cursor uint64, evs []controlevent.Event) (map[string]bool, error) {
	ids := make([]any, 0, min(len(evs), a.cfg.MaxBatch))
	for _, ev := range evs {
		if len(ids) >= a.cfg.MaxBatch {
			break
		}
		if ev.ControlVersion > cursor {
			ids = append(ids, ev.EventID)
		}
	}
	known := make(map[string]bool)
	const chunk = 500 // well under SQLite's bound on bind parameters
	for len(ids) > 0 {
		part := ids[:min(chunk, len(ids))]
		ids = ids[len(part):]
		if err := lookupIDs(ctx, a.db, part, known); err != nil {
			return nil, err
		}
	}
	return known, nil
}

func lookupIDs(ctx context.Context, db *sql.DB, ids []any, known map[string]bool) error {
	rows, err := db.QueryContext(ctx, `SELECT event_id FROM controlfeed_applied_events WHERE event_id IN (?`+
		strings.Repeat(", ?", len(ids)-1)+`)`, ids...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return err
		}
		known[id] = true
	}
	return rows.Err()
}

// fetch reads and verifies ev's payload.
func (a *Applier) fetch(ctx context.Context, ev controlevent.Event) ([]byte, error) {
	if a.store == nil {
		return nil, a.eventErr(ev, "fetch artifact for", fmt.Errorf("artifact %s: %w", ev.ArtifactRef, errNoStore))
	}
	var p []byte
	err := a.call(ctx, func() string {
		return fmt.Sprintf("fetch of artifact %s for event %s from store %s", ev.ArtifactRef, ev.EventID, a.store.Name())
	}, func(ctx context.Context) (err error) {
		p, err = artifact.GetBytes(ctx, a.store, ev.ArtifactRef, a.cfg.MaxPayloadBytes)
		return err
	})
	if errors.Is(err, artifact.ErrNotFound) {
		// Most often the producer's writer stored it elsewhere: a kv put
		// without the nodes' --artifact-store (the file store by default).
		return nil, a.eventErr(ev, "fetch artifact for", fmt.Errorf("artifact %s from store %s (the producer referenced content this store does not hold: "+
			"check that whatever wrote it, such as controlfeed kv put, used the same artifact store, bucket or directory as this node, "+
			"then store the same content there (the same kv put with this node's --artifact-store); the node retries the event with backoff): %w", ev.ArtifactRef, a.store.Name(), err))
	}
	if err != nil {
		return nil, a.eventErr(ev, "fetch artifact for", fmt.Errorf("artifact %s from store %s: %w", ev.ArtifactRef, a.store.Name(), err))
	}
	if err := controlevent.VerifyChecksum(p, ev.Checksum); err != nil {
		return nil, a.eventErr(ev, "verify artifact for", fmt.Errorf("artifact %s: %w", ev.ArtifactRef, err))
	}
	return p, nil
}

// commit applies plan in one transaction. It returns how many events of
// plan were committed, the failing event if one failed (its effects rolled
// back, the ones before it committed), or err if the transaction as a whole
// failed (nothing committed).
func (a *Applier) commit(ctx context.Context, plan []item) (n int, fail *failure, err error) {
	// Optimistically, without savepoints: they cost two statements per
	// event. If event k fails, that transaction is rolled back and the
	// events up to k are applied again with a savepoint each, so the ones
	// before k still commit and k is the reported failure.
	if !fresh(plan) {
		// A duplicate is the likely failure (a conflicting copy): go
		// straight to savepoints, so no handler runs twice.
		return a.commitTx(ctx, plan, len(plan) > 1)
	}
	n, fail, err = a.commitTx(ctx, plan, false)
	if errors.Is(err, errNotFresh) {
		// Recorded by someone else (a Skip) since lookupBatch.
		return a.commitTx(ctx, plan, len(plan) > 1)
	}
	if err != nil || fail == nil || len(plan) == 1 {
		return n, fail, err
	}
	k := slices.IndexFunc(plan, func(it item) bool { return it.ev.ControlVersion == fail.ev.ControlVersion })
	if k <= 0 {
		return 0, fail, nil
	}
	return a.commitTx(ctx, plan[:k+1], true)
}

// fresh reports whether no item of plan is known to be recorded already and
// no EventID repeats within it.
func fresh(plan []item) bool {
	seen := make(map[string]struct{}, len(plan))
	for _, it := range plan {
		if _, dup := seen[it.ev.EventID]; dup || it.known {
			return false
		}
		seen[it.ev.EventID] = struct{}{}
	}
	return true
}

// commitTx is one attempt of commit, with a savepoint per event if useSP.
// Without savepoints a failing event rolls back the whole transaction and
// is returned as fail with n == 0.
func (a *Applier) commitTx(ctx context.Context, plan []item, useSP bool) (n int, fail *failure, err error) {
	if len(plan) == 0 {
		return 0, nil, nil
	}
	start := time.Now()
	var tx *sql.Tx
	if a.w != nil {
		tx, err = a.w.conn.BeginTx(ctx, nil)
	} else {
		tx, err = a.db.BeginTx(ctx, nil)
	}
	if err != nil {
		return 0, nil, fmt.Errorf("applier: begin: %w", err)
	}
	defer func() {
		if err != nil || n == 0 {
			tx.Rollback()
		}
	}()
	// Handlers get hctx, so applier.Exec reuses their statements for the
	// whole transaction; database/sql closes them when it ends.
	hctx, stmts := withStmtCache(ctx, tx)
	ins, err := stmts.prepare(ctx, insertApplied)
	if err != nil {
		return 0, nil, fmt.Errorf("applier: prepare: %w", err)
	}
	now := formatTime(time.Now())
	// The state digest's steps of the committed events, chained after the
	// loop (reading the stored digest first would make this transaction a
	// reader before it writes).
	steps := make([]DigestStep, 0, len(plan))
	// Without savepoints, record the whole batch in one statement first;
	// if any event turns out to be recorded already, start over with
	// savepoints (errNotFresh).
	recorded := false
	if !useSP && len(plan) > 1 {
		if recorded, err = recordBatch(ctx, tx, plan, now); err != nil {
			return 0, nil, err
		}
	}
	var spBegin, spRelease *sql.Stmt
	if useSP {
		if spBegin, err = tx.PrepareContext(ctx, `SAVEPOINT controlfeed_event`); err != nil {
			return 0, nil, fmt.Errorf("applier: prepare savepoint: %w", err)
		}
		defer spBegin.Close()
		if spRelease, err = tx.PrepareContext(ctx, `RELEASE controlfeed_event`); err != nil {
			return 0, nil, fmt.Errorf("applier: prepare savepoint: %w", err)
		}
		defer spRelease.Close()
	}
	for i := range plan {
		it := &plan[i]
		it.dup, it.outcome = false, ""
		if useSP {
			if _, err := spBegin.ExecContext(ctx); err != nil {
				return 0, nil, fmt.Errorf("applier: savepoint: %w", err)
			}
		}
		var aerr error
		if recorded {
			aerr = a.runHandler(hctx, tx, it)
		} else {
			aerr = a.applyOne(hctx, tx, ins, it, now)
		}
		if aerr != nil {
			if ctx.Err() != nil {
				return 0, nil, ctx.Err()
			}
			if !useSP {
				return 0, &failure{it.ev, OpApply, aerr}, nil
			}
			if _, err := tx.ExecContext(ctx, `ROLLBACK TO controlfeed_event`); err != nil {
				return 0, nil, fmt.Errorf("applier: roll back to savepoint after %v: %w", aerr, err)
			}
			if _, err := tx.ExecContext(ctx, `RELEASE controlfeed_event`); err != nil {
				return 0, nil, fmt.Errorf("applier: release savepoint: %w", err)
			}
			fail = &failure{it.ev, OpApply, aerr}
			break
		}
		if useSP {
			if _, err := spRelease.ExecContext(ctx); err != nil {
				return 0, nil, fmt.Errorf("applier: release savepoint: %w", err)
			}
		}
		if step, ok, err := stepOf(ctx, tx, it); err != nil {
			return 0, nil, err
		} else if ok {
			steps = append(steps, step)
		}
		if len(plan) > 1 {
			if err := failpoint.Inject(failpoint.ApplierMidBatch); err != nil {
				return 0, nil, fmt.Errorf("applier: apply batch of %d events: %w", len(plan), err)
			}
		}
		n++
	}
	if n == 0 {
		return 0, fail, nil
	}
	last := int64(plan[n-1].ev.ControlVersion)
	// The state digest moves with the cursor, in the same statement.
	digest, err := a.advanceCursor(ctx, tx, last, now, steps)
	if err != nil {
		return 0, nil, err
	}
	if err := writeCheckpoints(ctx, tx, digest.marks, now); err != nil {
		return 0, nil, err
	}
	if a.cfg.Keyring != nil {
		h := plan[n-1].trust
		if _, err := tx.ExecContext(ctx, `UPDATE controlfeed_cursor SET trust_seq = ?, trust_digest = ? WHERE id = 1`, int64(h.Seq), h.Digest); err != nil {
			return 0, nil, fmt.Errorf("applier: advance trust chain head to seq %d: %w", h.Seq, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM controlfeed_halt WHERE control_version <= ?`, last); err != nil {
		return 0, nil, fmt.Errorf("applier: clear halt: %w", err)
	}
	if err := failpoint.Inject(failpoint.ApplierBeforeCommit); err != nil {
		return 0, nil, fmt.Errorf("applier: commit %d events through control version %d: %w", n, last, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, nil, fmt.Errorf("applier: commit %d events through control version %d: %w", n, last, err)
	}
	digest.marks = nil
	a.chain = &digest
	if a.cfg.Keyring != nil {
		h := plan[n-1].trust
		a.trustHead = &h
		for _, it := range plan[:n] {
			if trust.IsKeyEvent(it.ev.Type) {
				a.ring = nil // read the changed keys again
			}
		}
	}
	if a.w != nil {
		a.w.committed()
	}
	a.m.observe(start, time.Now(), plan[:n])
	return n, fail, nil
}

// applyOne records it in controlfeed_applied_events and runs its handler,
// unless it is already recorded (a duplicate).
func (a *Applier) applyOne(ctx context.Context, tx *sql.Tx, ins *sql.Stmt, it *item, now string) error {
	ev := it.ev
	cv, err := toInt64(ev.ControlVersion)
	if err != nil {
		return a.eventErr(ev, "record", err)
	}
	res, err := ins.ExecContext(ctx, ev.EventID, cv, ev.Type, now, it.digest())
	if err != nil {
		return a.eventErr(ev, "record", err)
	}
	if rows, err := res.RowsAffected(); err != nil {
		return a.eventErr(ev, "record", err)
	} else if rows == 0 {
		outcome, err := checkDuplicate(ctx, tx, ev)
		if err != nil {
			return a.eventErr(ev, "record", err)
		}
		it.dup, it.outcome = true, outcome
		return nil
	}
	return a.runHandler(ctx, tx, it)
}

// runHandler runs it's handler in tx; its controlfeed_applied_events row is
// already written.
func (a *Applier) runHandler(ctx context.Context, tx *sql.Tx, it *item) error {
	ev := it.ev
	h := a.handler(ev.Type)
	if h == nil {
		return a.eventErr(ev, "apply", fmt.Errorf("no handler for event type %q", ev.Type))
	}
	if err := h(ctx, tx, ev, it.payload); err != nil {
		return a.eventErr(ev, "apply", err)
	}
	it.outcome = outcomeApplied
	return nil
}

// ack acknowledges committed events to the Source.
func (a *Applier) ack(ctx context.Context, evs []controlevent.Event) {
	if len(evs) == 0 {
		return
	}
	if a.cumAcker != nil {
		last := evs[len(evs)-1]
		if err := a.call(ctx, func() string { return "ack through event " + last.EventID }, func(ctx context.Context) error {
			return a.cumAcker.AckThrough(ctx, last.EventID)
		}); err != nil {
			a.log.Warn("applier: ack failed; the source will redeliver", "through_event_id", last.EventID,
				"control_version", last.ControlVersion, "err", err)
		}
		return
	}
	if a.acker == nil {
		return
	}
	for _, ev := range evs {
		if err := a.call(ctx, func() string { return "ack of event " + ev.EventID }, func(ctx context.Context) error {
			return a.acker.Ack(ctx, ev.EventID)
		}); err != nil {
			a.log.Warn("applier: ack failed; the source will redeliver", "event_id", ev.EventID,
				"control_version", ev.ControlVersion, "err", err)
		}
	}
}
