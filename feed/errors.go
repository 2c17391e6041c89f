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
