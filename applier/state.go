package applier

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/trust"
)

// State is what an Applier's latest round ended in, as Status.State reports
// it. It changes in one place (settle), at the end of every Step.
type State uint8

const (
	// StateStarting: no round has ended yet.
	StateStarting State = iota
	// StateApplying: the applier follows the feed (it applied what there
	// was, or there was nothing new).
	StateApplying
	// StateHalted: an event cannot be applied (see Status.Halted). The halt
	// is persisted, retried with backoff, and an operator may Skip it.
	StateHalted
	// StateUnavailable: the feed, the artifact store or the local database
	// cannot serve (see Status.Unavailable). Nothing is persisted, nothing
	// can be skipped: the applier retries with backoff until it can.
	StateUnavailable
	// StateGap: the feed skipped a position that it still holds (see
	// Status.Gap). The applier applies nothing past the cursor and polls
	// again with backoff; nothing can be skipped.
	StateGap
	// StateBehindRetention: the feed no longer holds the events after the
	// cursor (see Status.BehindRetention); the node must be
	// re-bootstrapped.
	StateBehindRetention
	// StateSecurityHalted: an event failed the trust checks of
	// Config.Keyring (unsigned, unknown key, bad signature, or not the
	// successor of the chain head: see Status.Halted.Security). It is
	// persisted like a halt and never applied; only SkipSecurityHalt, an
	// explicit override, passes it.
	StateSecurityHalted
)

// String returns the state's name as /v1/status shows it.
func (s State) String() string {
	switch s {
	case StateStarting:
		return "starting"
	case StateApplying:
		return "applying"
	case StateHalted:
		return "halted"
	case StateUnavailable:
		return "unavailable"
	case StateGap:
		return "gap"
	case StateBehindRetention:
		return "behind_retention"
	case StateSecurityHalted:
		return "security_halted"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// ErrUnavailable is wrapped by Step's error when the infrastructure, not the
// event, failed: the feed, the artifact store or the local database (see
// StateUnavailable). The cause is wrapped too.
var ErrUnavailable = errors.New("applier unavailable")

// Ops of Unavailable.Op: the step that failed.
const (
	OpPoll     = "poll"      // reading the feed (Source.Poll)
	OpCheckGap = "check_gap" // asking the feed whether a hole was deleted (feed.GapChecker)
	OpFetch    = "fetch"     // reading an event's artifact from the store
	OpReadDB   = "read_db"   // reading the node's database (cursor, halt, applied events)
	OpApply    = "apply"     // a statement of one event inside the apply transaction
	OpCommit   = "commit"    // the apply transaction as a whole (begin, savepoint, cursor, commit)
)

// ops that are not an Unavailable.Op: they always halt.
const (
	opValidate = "validate" // Validate, an invalid feed message, non-ascending positions
	opHandler  = "handler"  // no handler for the type
	opVerify   = "verify"   // the trust checks of Config.Keyring
)

// Unavailable describes infrastructure the applier cannot use at the moment.
type Unavailable struct {
	// Op is the step that failed, one of the Op constants.
	Op string
	// EventID and ControlVersion name the event being applied when it
	// failed; empty and 0 when no event was (a failed Poll).
	EventID        string
	ControlVersion uint64
	// Error is the latest attempt's error message.
	Error string
	// Attempts counts consecutive unavailable rounds; Since is when the
	// first of them failed, LastAttempt the latest.
	Attempts           int
	Since, LastAttempt time.Time
}

// Gap describes a hole in the delivered feed that the feed did not delete:
// see feed.GapError.
type Gap struct {
	// Cursor is the node's position; Next the first position delivered
	// after it; Missing the lowest position in between that the feed still
	// holds (0 if it did not say).
	Cursor, Next, Missing uint64
	// Error is the latest report's message.
	Error string
	// Attempts counts consecutive rounds that met a gap; Since is when the
	// first of them did, LastAttempt the latest.
	Attempts           int
	Since, LastAttempt time.Time
}

// classify decides what a failure means. It is the one place that tells
// "this event cannot be applied" (StateHalted) from "the infrastructure is
// unavailable" (StateUnavailable) and from a gap in the feed (StateGap):
//
//   - validate, handler (invalid event or feed message, positions not
//     ascending, no handler for the type): halted.
//   - poll: an invalid feed message is halted (Step turns it into an event
//     first); feed.ErrCursorBehindRetention is behind retention; feed.ErrGap
//     is a gap; anything else is unavailable.
//   - check_gap: feed.ErrGap is a gap; anything else is unavailable (the
//     feed cannot tell).
//   - fetch: halted only when the store says the artifact itself is bad:
//     artifact.ErrNotFound, ErrCorrupt, ErrBadRef, ErrTooLarge, a checksum
//     mismatch, or no store configured; anything else (timeouts, connection
//     errors, no quorum, errors wrapping feed.ErrUnavailable) is unavailable.
//   - apply (a handler or the applied_events insert inside the
//     transaction): halted, unless the error is an infrastructure error
//     (infraError: a full disk, a busy or locked database, an I/O error, a
//     timeout, feed.ErrUnavailable); conflicts (ErrConflict) always halt.
//   - commit (the transaction as a whole): unavailable, unless SQLite
//     reports a constraint violation at commit (a deferred constraint a
//     handler broke), which halts.
//   - read_db: unavailable.
func classify(op string, err error) State {
	switch {
	case op == opVerify || errors.Is(err, trust.ErrSecurity):
		return StateSecurityHalted
	case errors.Is(err, ErrConflict):
		return StateHalted
	case errors.Is(err, feed.ErrGap):
		return StateGap
	}
	switch op {
	case opValidate, opHandler:
		return StateHalted
	case OpPoll:
		if errors.Is(err, feed.ErrCursorBehindRetention) {
			return StateBehindRetention
		}
		return StateUnavailable
	case OpFetch:
		if artifactBad(err) {
			return StateHalted
		}
		return StateUnavailable
	case OpApply:
		if infraError(err) {
			return StateUnavailable
		}
		return StateHalted
	case OpCommit:
		if code, ok := sqliteCode(err); ok && code&0xff == sqliteConstraint {
			return StateHalted
		}
		return StateUnavailable
	}
	return StateUnavailable // check_gap, read_db
}

// errNoStore is a fetch for an event with an artifact when the applier has
// no artifact store: the event cannot be applied by this node.
var errNoStore = errors.New("no artifact store configured")

// artifactBad reports whether a fetch error means the artifact itself cannot
// be used, as opposed to the store failing to answer.
func artifactBad(err error) bool {
	for _, target := range []error{artifact.ErrNotFound, artifact.ErrCorrupt, artifact.ErrBadRef,
		artifact.ErrTooLarge, controlevent.ErrChecksumMismatch, controlevent.ErrInvalid, errNoStore} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// SQLite primary result codes (https://sqlite.org/rescode.html), stable
// across versions and drivers. The applier reads them through the driver
// error's Code() int method (modernc.org/sqlite's *sqlite.Error has it) so
// that it does not link a driver.
const (
	sqliteBusy       = 5
	sqliteLocked     = 6
	sqliteNoMem      = 7
	sqliteReadOnly   = 8
	sqliteIOErr      = 10
	sqliteCorrupt    = 11
	sqliteFull       = 13
	sqliteCantOpen   = 14
	sqliteProtocol   = 15
	sqliteConstraint = 19
	sqliteNotADB     = 26
)

// sqliteCode returns the result code of a SQLite driver error in err's chain.
func sqliteCode(err error) (int, bool) {
	var c interface{ Code() int }
	if errors.As(err, &c) {
		return c.Code(), true
	}
	return 0, false
}

// infraError reports whether err says that the infrastructure failed rather
// than the operation being wrong: errors wrapping feed.ErrUnavailable; a
// deadline (context.DeadlineExceeded, os.ErrDeadlineExceeded); a network
// error; a full, read-only or failing disk (ENOSPC, EDQUOT, EROFS, EIO); and
// the SQLite codes for a busy, locked, full, unreadable or failing database
// (BUSY, LOCKED, NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL,
// NOTADB; extended codes count by their primary code).
func infraError(err error) bool {
	for _, target := range []error{feed.ErrUnavailable, context.DeadlineExceeded, os.ErrDeadlineExceeded,
		syscall.ENOSPC, syscall.EDQUOT, syscall.EROFS, syscall.EIO, syscall.ENOMEM,
		syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.EPIPE, syscall.ETIMEDOUT} {
		if errors.Is(err, target) {
			return true
		}
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	if code, ok := sqliteCode(err); ok {
		switch code & 0xff {
		case sqliteBusy, sqliteLocked, sqliteNoMem, sqliteReadOnly, sqliteIOErr, sqliteCorrupt,
			sqliteFull, sqliteCantOpen, sqliteProtocol, sqliteNotADB:
			return true
		}
	}
	return false
}

// failure is why a round stopped: the step (op), the event it was at (zero
// for a failed Poll) and the error.
type failure struct {
	ev  controlevent.Event
	op  string
	err error
}

// settle ends a Step with f (nil: the round succeeded). It is the one place
// that changes Status.State: it classifies f, records the state's detail
// (persisting a halt), clears the details of the states left, logs the
// change, and returns Step's error: nil, or one wrapping ErrHalted,
// ErrUnavailable, feed.ErrGap or feed.ErrCursorBehindRetention, and the
// cause.
//
// A persisted halt stays in Status.Halted until the cursor moves past its
// event (or a Skip lets it): a round that succeeds without doing so (the
// feed had nothing new) leaves the state halted, and an unavailable round
// meanwhile does not clear it.
func (a *Applier) settle(ctx context.Context, f *failure) error {
	to := StateApplying
	if f != nil {
		to = classify(f.op, f.err)
	}
	now := time.Now()
	a.mu.Lock()
	if to == StateApplying && a.st.Halted != nil {
		to = StateHalted // outstanding, not a new attempt
		if a.st.Halted.Security != "" {
			to = StateSecurityHalted
		}
		f = nil
	}
	leftU, leftG, leftB := a.st.Unavailable, a.st.Gap, a.st.BehindRetention
	if to != StateUnavailable {
		a.st.Unavailable = nil
	}
	if to != StateGap {
		a.st.Gap = nil
	}
	if to != StateBehindRetention {
		a.st.BehindRetention = nil
	}
	var h *Halt
	switch {
	case (to == StateHalted || to == StateSecurityHalted) && f != nil:
		h = a.st.Halted
		if h == nil || h.EventID != f.ev.EventID || h.ControlVersion != f.ev.ControlVersion {
			h = &Halt{EventID: f.ev.EventID, ControlVersion: f.ev.ControlVersion, Type: f.ev.Type, Since: now}
		} else {
			c := *h
			h = &c
		}
		h.Error = f.err.Error()
		h.Security = ""
		if to == StateSecurityHalted {
			h.Security = securityReason(f.err)
		}
		h.Attempts++
		h.LastAttempt = now
		a.st.Halted = h
	case to == StateUnavailable:
		u := &Unavailable{Since: now}
		if leftU != nil {
			u.Since, u.Attempts = leftU.Since, leftU.Attempts
		}
		u.Op, u.EventID, u.ControlVersion = f.op, f.ev.EventID, f.ev.ControlVersion
		u.Error = f.err.Error()
		u.Attempts++
		u.LastAttempt = now
		a.st.Unavailable = u
	case to == StateGap:
		g := &Gap{Since: now}
		if leftG != nil {
			g.Since, g.Attempts = leftG.Since, leftG.Attempts
		} else {
			a.st.Gaps++
		}
		var ge *feed.GapError
		if errors.As(f.err, &ge) {
			g.Cursor, g.Next, g.Missing = ge.Cursor, ge.Next, ge.Missing
		}
		g.Error = f.err.Error()
		g.Attempts++
		g.LastAttempt = now
		a.st.Gap = g
	case to == StateBehindRetention:
		var cbe *feed.CursorBehindError
		if !errors.As(f.err, &cbe) {
			cbe = &feed.CursorBehindError{Source: a.src.Name(), Cursor: a.st.Cursor}
		}
		c := *cbe
		a.st.BehindRetention = &c
	}
	a.st.State = to
	cursor := a.st.Cursor
	var u *Unavailable
	if a.st.Unavailable != nil {
		c := *a.st.Unavailable
		u = &c
	}
	var g *Gap
	if a.st.Gap != nil {
		c := *a.st.Gap
		g = &c
	}
	a.mu.Unlock()

	switch {
	case leftU != nil && to != StateUnavailable:
		a.log.Info("applier: available again; resuming", "op", leftU.Op, "unavailable_for", now.Sub(leftU.Since).Round(time.Millisecond),
			"attempts", leftU.Attempts, "cursor", cursor)
	case leftG != nil && to != StateGap:
		a.log.Info("applier: the gap in the feed is closed; resuming", "cursor", cursor, "attempts", leftG.Attempts)
	case leftB != nil && to != StateBehindRetention:
		a.log.Info("applier: feed holds the events after the cursor again; resuming", "cursor", cursor)
	}
	switch to {
	case StateApplying:
		return nil
	case StateHalted, StateSecurityHalted:
		if h == nil {
			return nil // outstanding halt, nothing tried this round
		}
		return a.persistHalt(ctx, h, f)
	case StateUnavailable:
		attrs := []any{"op", u.Op, "attempts", u.Attempts, "since", u.Since, "cursor", cursor, "err", f.err}
		if u.EventID != "" {
			attrs = append(attrs, "event_id", u.EventID, "control_version", u.ControlVersion)
		}
		if u.Attempts == 1 {
			a.log.Warn("applier: unavailable: the feed, the artifact store or the local database cannot serve; retrying with backoff (nothing is halted, nothing to skip)", attrs...)
		} else {
			a.log.Warn("applier: still unavailable", attrs...)
		}
		return fmt.Errorf("%w (%s, attempt %d since %s): %w", ErrUnavailable, u.Op, u.Attempts, u.Since.Format(time.RFC3339), f.err)
	case StateGap:
		attrs := []any{"cursor", g.Cursor, "next", g.Next, "missing", g.Missing, "attempts", g.Attempts, "since", g.Since, "err", f.err}
		if g.Attempts == 1 {
			a.log.Error("applier: gap in the feed: a position it still holds was not delivered; applying nothing past the cursor, polling again with backoff (not skippable)", attrs...)
		} else {
			a.log.Warn("applier: still a gap in the feed", attrs...)
		}
		return fmt.Errorf("applier: %s after control version %d: %w", a.src.Name(), cursor, f.err)
	case StateBehindRetention:
		if leftB == nil {
			a.log.Error("applier: node is behind the feed's retention and cannot catch up by replay; re-bootstrap it from a snapshot",
				"cursor", cursor, "err", f.err)
		}
		return fmt.Errorf("applier: poll %s after control version %d: %w", a.src.Name(), cursor, f.err)
	}
	return f.err
}

// persistHalt writes h, the halt at f's event, to controlfeed_halt, logs it
// and returns Step's error.
func (a *Applier) persistHalt(ctx context.Context, h *Halt, f *failure) error {
	a.recordConflict(ctx, f.err)
	cv, _ := toInt64(h.ControlVersion)
	if _, err := a.db.ExecContext(ctx, `INSERT INTO controlfeed_halt (id, event_id, control_version, type, error, attempts, since, last_attempt, security)
		VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET event_id = excluded.event_id, control_version = excluded.control_version,
			type = excluded.type, error = excluded.error, attempts = excluded.attempts,
			since = excluded.since, last_attempt = excluded.last_attempt, security = excluded.security`,
		h.EventID, cv, h.Type, h.Error, h.Attempts, formatTime(h.Since), formatTime(h.LastAttempt), h.Security); err != nil && ctx.Err() == nil {
		a.log.Error("applier: persist halt", "event_id", h.EventID, "err", err)
	}
	attrs := []any{"event_id", h.EventID, "control_version", h.ControlVersion, "type", h.Type,
		"attempts", h.Attempts, "since", h.Since, "err", f.err}
	if h.Security != "" {
		attrs = append(attrs, "security", h.Security)
		if h.Attempts == 1 {
			a.log.Error("applier: SECURITY HALT: event failed verification and will not be applied; find out who wrote it (docs/SECURITY.md); a plain skip is refused", attrs...)
		} else {
			a.log.Warn("applier: still security-halted", attrs...)
		}
		return fmt.Errorf("%w at event %q (control version %d, %s): %w", ErrSecurityHalted, h.EventID, h.ControlVersion, h.Security, f.err)
	}
	if h.Attempts == 1 {
		a.log.Error("applier: halted: event cannot be applied; retrying with backoff (operator may skip it)", attrs...)
	} else {
		a.log.Warn("applier: still halted", attrs...)
	}
	return fmt.Errorf("%w at event %q (control version %d): %w", ErrHalted, h.EventID, h.ControlVersion, f.err)
}

// attempts returns the retry count of the current state, for Run's backoff.
func (a *Applier) attempts() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 1
	switch {
	case a.st.State == StateUnavailable && a.st.Unavailable != nil:
		n = a.st.Unavailable.Attempts
	case a.st.State == StateGap && a.st.Gap != nil:
		n = a.st.Gap.Attempts
	case a.st.Halted != nil:
		n = a.st.Halted.Attempts
	}
	return max(n, 1)
}

// securityReason returns the trust.Reason name of a verification failure,
// or "verify" when err carries none.
func securityReason(err error) string {
	var se *trust.SecurityError
	if errors.As(err, &se) {
		return se.Reason.String()
	}
	return opVerify
}
