package feed

import (
	"errors"
	"fmt"
)

// ErrCursorBehindRetention is wrapped by Poll when the events right after the
// caller's cursor are no longer in the feed (the broker's retention removed
// them). The node cannot catch up by replay: it must be re-bootstrapped from a
// snapshot of the producer's state, then resume from the snapshot's position.
// Use errors.As with *CursorBehindError for the positions.
var ErrCursorBehindRetention = errors.New("cursor is behind the feed's retention")

// ErrClosed is returned by operations on a Source or Sink after Close.
var ErrClosed = errors.New("feed: closed")

// CursorBehindError reports that a Source no longer holds the events after a
// node's cursor. It wraps ErrCursorBehindRetention.
type CursorBehindError struct {
	// Source is the backend name.
	Source string
	// Cursor is the node's position: the last ControlVersion it applied.
	Cursor uint64
	// FirstAvailable is the oldest ControlVersion the feed still holds.
	FirstAvailable uint64
}

// Error tells the operator what happened and what to do about it.
func (e *CursorBehindError) Error() string {
	gone := "the events after it are gone"
	if e.FirstAvailable > e.Cursor+1 {
		gone = fmt.Sprintf("events %d..%d are gone", e.Cursor+1, e.FirstAvailable-1)
	}
	return fmt.Sprintf("feed %s: node cursor %d is behind the feed's retention: the oldest event still held is %d, so %s and cannot be replayed; "+
		"re-bootstrap this node from a snapshot of the producer's state (or raise the stream's retention), then restart it",
		e.Source, e.Cursor, e.FirstAvailable, gone)
}

// Unwrap makes errors.Is(err, ErrCursorBehindRetention) true.
func (e *CursorBehindError) Unwrap() error { return ErrCursorBehindRetention }

// ErrInvalidEvent is wrapped by Poll when the next position after the cursor
// holds a message that is not a valid event (undecodable, or failing
// controlevent.Event.Validate). Use errors.As with *InvalidEventError for the
// position.
var ErrInvalidEvent = errors.New("feed holds an invalid event")

// InvalidEventError reports that the message at ControlVersion, the first
// position after the caller's cursor, is not a valid event. A Source returns
// the valid events before such a message first; only when it is next does
// Poll fail with this error, on every call, until the caller's cursor moves
// past ControlVersion. That lets the applier halt visibly at that position
// and an operator skip it by EventID, instead of the whole node wedging on an
// unnamed error. It wraps ErrInvalidEvent and the decoding error.
type InvalidEventError struct {
	// Source is the backend name.
	Source string
	// ControlVersion is the message's position in the feed.
	ControlVersion uint64
	// EventID is the message's idempotency key if the backend could read a
	// valid one (for JetStream, the Nats-Msg-Id header), else the
	// placeholder "unreadable@<ControlVersion>" so it can still be named.
	EventID string
	// Err is why the message is not a valid event.
	Err error
}

// UnreadableEventID returns the placeholder EventID of an invalid message
// whose own id could not be read.
func UnreadableEventID(controlVersion uint64) string {
	return fmt.Sprintf("unreadable@%d", controlVersion)
}

// Error names the position, the id and the reason.
func (e *InvalidEventError) Error() string {
	return fmt.Sprintf("feed %s: message at control version %d (event id %q) is not a valid event: %v; the node halts here until it is fixed upstream or skipped",
		e.Source, e.ControlVersion, e.EventID, e.Err)
}

// Unwrap makes errors.Is match ErrInvalidEvent and the decoding error.
func (e *InvalidEventError) Unwrap() []error { return []error{ErrInvalidEvent, e.Err} }

// ErrGap is wrapped by errors that report a hole in the delivered feed: a
// position the feed still holds, after the caller's cursor and before an event
// it was given, that it was never given (another consumer took it, a fetch was
// cut short, a publish landed out of order). Skipping the hole would apply
// later events without the earlier one, so a consumer that sees ErrGap applies
// nothing past the cursor, reports the gap and polls again; it never advances
// over it. Use errors.As with *GapError for the positions.
var ErrGap = errors.New("feed skipped an event that it still holds")

// GapError reports that the events at positions after Cursor and before Next
// were not delivered although the feed did not delete them. It wraps ErrGap.
type GapError struct {
	// Source is the backend name.
	Source string
	// Cursor is the caller's position: the last ControlVersion it applied.
	Cursor uint64
	// Next is the ControlVersion of the first event that was delivered
	// after Cursor.
	Next uint64
	// Missing is the lowest position in (Cursor, Next) that the feed holds
	// but did not deliver; 0 if the backend could not tell which.
	Missing uint64
	// Reason says why the gap is believed to exist (e.g. "another process
	// consumes as this node"), or is empty.
	Reason string
}

// Error names the positions and what the operator should look at.
func (e *GapError) Error() string {
	missing := fmt.Sprintf("events %d..%d", e.Cursor+1, e.Next-1)
	if e.Cursor+1 == e.Next-1 {
		missing = fmt.Sprintf("event %d", e.Cursor+1)
	}
	held := ""
	if e.Missing != 0 {
		held = fmt.Sprintf(" (the feed still holds %d)", e.Missing)
	}
	reason := ""
	if e.Reason != "" {
		reason = ": " + e.Reason
	}
	return fmt.Sprintf("feed %s: after cursor %d the next event delivered is %d, but %s%s were never delivered%s; "+
		"nothing past the cursor is applied until they are", e.Source, e.Cursor, e.Next, missing, held, reason)
}

// Unwrap makes errors.Is(err, ErrGap) true.
func (e *GapError) Unwrap() error { return ErrGap }

// ErrUnavailable is wrapped by errors that mean the infrastructure, not the
// event, is at fault: the broker or the artifact store timed out, has no
// quorum or is disconnected. Such an error is transient: the caller retries
// with backoff and never records it against an event (no halt, nothing to
// skip). Backends wrap their timeouts and connection errors with it where
// they can tell.
var ErrUnavailable = errors.New("feed infrastructure unavailable")
