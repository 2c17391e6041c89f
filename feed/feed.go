// Package feed is the control-event feed seam: the ordered stream of control
// events that every fleet node reads to stay in sync with the control plane,
// and the producer-side sink that writes into it.
//
// An event is a small notification carrying a content-addressed artifact
// reference (see package controlevent); the feed carries events, never their
// payloads. Backends are selected by name through a registry, in the style of
// database/sql drivers: a backend package registers itself in init() and a
// program activates it with a blank import, for example
//
//	import _ "github.com/controlfeed/controlfeed/feed/filesource"
//
// This package imports no backend. The built-in backends are "nop" (package
// feed/nop: the feed is disabled, the single-node default), "file" (package
// feed/filesource: a local directory) and "jetstream" (package feed/natsfeed:
// NATS JetStream).
//
// # Delivery semantics
//
// A Sink assigns each event a ControlVersion: a strictly increasing position
// in the feed. EventID is the idempotent-publish key: appending an event whose
// EventID the backend has already seen, within the backend's dedup window,
// returns the ControlVersion it was first given instead of adding a second
// event. Past that window a duplicate may enter the feed; consumers guard
// against it with their applied_events table, so the effect is still
// exactly-once.
//
// A Source returns events strictly after a cursor, in ascending
// ControlVersion order. A consumer that crashes before recording its progress
// polls from its old cursor again and sees the same events again; applying
// them is its job, made idempotent by the applied_events guard.
//
// # Optional capabilities
//
// Sources and Sinks may implement further one-method interfaces, detected by
// type assertion: Acker (explicit acknowledgement after apply), CumulativeAcker
// (acknowledge everything up to an event in one call), Waiter (block until new
// events may exist), HeadReporter (the feed's newest position, for lag),
// BatchAppender (pipelined publishing) and GapChecker (the feed's positions
// are dense, so a consumer can tell a hole from a deletion). Each documents what callers do when it
// is absent. A wrapper around a Source or Sink must forward these or it hides
// them.
//
// # Errors
//
// Backends wrap their native errors with %w and map the conditions callers act
// on to the sentinels of this package (ErrCursorBehindRetention, ErrGap,
// ErrUnavailable, ErrInvalidEvent, ErrClosed).
// Backends do not retry: the pump and the applier own retry and backoff.
package feed

import (
	"context"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
)

// Source yields control events strictly after a cursor position.
//
// Implementations must be safe for use by one goroutine at a time; the
// applier never calls a Source concurrently. Implementations that document
// more (concurrent Poll) say so.
type Source interface {
	// Poll returns the events with ControlVersion > sinceControlVersion, in
	// ascending ControlVersion order, possibly only the first of them (a
	// backend may bound the batch; callers poll again from the last one).
	// An empty slice with a nil error means "nothing new", never an error
	// condition. Poll must be cheap enough to call on a timer and must
	// return once ctx is done, with ctx's error. The caller owns the
	// returned slice.
	//
	// If the feed no longer holds the events right after
	// sinceControlVersion (retention removed them), Poll returns an error
	// wrapping ErrCursorBehindRetention rather than skipping ahead.
	Poll(ctx context.Context, sinceControlVersion uint64) ([]controlevent.Event, error)

	// Name is the backend identity, for logs.
	Name() string
}

// Sink is the producer-side seam: it writes one event into the feed and
// returns it stamped with its broker-assigned ControlVersion.
//
// The pump calls Append once per outbox row, in outbox order, and retries a
// failed Append with the same event; Sinks never retry internally.
type Sink interface {
	// Append publishes one event. The input has EventID set and
	// ControlVersion == 0; anything else is an error. On success the
	// returned event is the input stamped with its ControlVersion (> 0).
	// On error the input is returned unchanged, so the caller can log
	// which event failed.
	//
	// EventID is the idempotent-publish key: a retry with the same EventID
	// resolves to the same ControlVersion, without a second event in the
	// feed, within the backend's dedup window. A crash after the broker
	// accepted an event but before the caller recorded the result is
	// therefore repaired by appending it again.
	Append(ctx context.Context, e controlevent.Event) (controlevent.Event, error)

	// Name is the backend identity, for logs.
	Name() string
}

// Acker is an optional interface a Source implements when its events need an
// explicit acknowledgement after a successful local apply (NATS JetStream
// pull consumers are the model).
//
// The applier calls Ack(eventID) only after the local transaction that wrote
// applied_events, the data rows and the cursor has committed. A crash before
// the Ack makes the broker redeliver the event, and the applied_events guard
// makes the replay a no-op. Ack of an event the source no longer tracks (it
// was acknowledged already, or the source was reopened) returns nil.
//
// Sources that need no acknowledgement (the file source: it has no
// broker-side cursor) do not implement Acker; the applier then acknowledges
// nothing.
type Acker interface {
	Ack(ctx context.Context, eventID string) error
}

// CumulativeAcker is an optional interface a Source may implement to
// acknowledge, in one call, the event with the given EventID and every event
// the source delivered before it. The applier uses it once after each
// committed catch-up batch instead of one Ack per event. If a Source does not
// implement it, the applier falls back to Ack for each event of the batch.
type CumulativeAcker interface {
	AckThrough(ctx context.Context, eventID string) error
}

// Waiter is an optional interface a Source may implement to block until
// events after sinceControlVersion may exist. Wait returns nil when new events
// may be available (a spurious wake-up is allowed; the caller then polls and
// finds nothing), or ctx's error once ctx is done. If a Source does not
// implement it, the applier polls on a short timer.
type Waiter interface {
	Wait(ctx context.Context, sinceControlVersion uint64) error
}

// HeadReporter is an optional interface a Source may implement to report the
// feed's newest ControlVersion (0 for an empty feed), so a node can show its
// lag. If a Source does not implement it, lag is reported as unknown.
type HeadReporter interface {
	Head(ctx context.Context) (uint64, error)
}

// BatchAppender is an optional interface a Sink may implement to publish many
// events with several in flight at once, keeping feed order equal to the
// order of the input.
//
// AppendBatch returns the stamped events for the longest prefix of events
// that was published, in input order, and the error that stopped it (nil if
// all were published). Events after that prefix may or may not have reached
// the feed; the caller retries from the first unpublished one with the same
// EventIDs, and the Sink's dedup resolves those already in. If a Sink does not
// implement it, the pump calls Append once per event.
type BatchAppender interface {
	AppendBatch(ctx context.Context, events []controlevent.Event) ([]controlevent.Event, error)
}

// Recoverer is an optional interface a Source or a Sink may implement to
// tell when the infrastructure behind it has come back after an outage
// (for the jetstream backend: its connection reconnected, or a JetStream
// stream or consumer leader was elected), so that a caller retrying with
// backoff retries at once and starts its backoff over, instead of sleeping
// out a delay that grew during the outage.
//
// Recovered returns a channel that is closed at the first such event after
// the call; a caller takes it before an attempt and, if that attempt
// fails, waits for it as well as for its backoff timer. It is safe for
// concurrent use and cheap (no request; repeated calls between two events
// return the same channel). A recovery is a hint, not a promise: the retry
// may fail again, and is then backed off from the start. If a Source or a
// Sink does not implement it, callers sleep out their backoff.
type Recoverer interface {
	Recovered() <-chan struct{}
}

// SourceConfig carries the backend options resolved from the program's
// configuration. The file backend uses FileDir; the jetstream backend uses
// the NATS fields. Backends ignore fields that are not theirs; new fields may
// be added without affecting existing backends and callers.
type SourceConfig struct {
	// FileDir is the directory of the file backend.
	FileDir string

	// NATS configures the jetstream backend.
	NATS NATSConfig
}

// NATSConfig holds the options of the jetstream backend. Zero values select
// the defaults documented in package feed/natsfeed.
type NATSConfig struct {
	// URLs are the NATS server URLs to connect to, e.g. "nats://127.0.0.1:4222".
	URLs []string
	// NodeName names this node's durable consumer; one per fleet node.
	NodeName string
	// Stream and Subject name the JetStream stream and the subject events
	// are published on.
	Stream  string
	Subject string

	// CredsFile is a NATS credentials (.creds) file.
	CredsFile string
	// User and Password authenticate with user/password.
	User, Password string
	// TLSCAFile, TLSCertFile and TLSKeyFile configure TLS: the CA that
	// signs the servers' certificates, and this client's certificate.
	TLSCAFile, TLSCertFile, TLSKeyFile string

	// Replicas is the stream's replication factor (1 on a single server,
	// 3 on a production cluster).
	Replicas int
	// MaxAge and MaxBytes bound the stream's retention; 0 means unlimited.
	MaxAge   time.Duration
	MaxBytes int64
	// DuplicateWindow is how long the broker remembers an EventID for
	// idempotent publishing. It should outlast the pump's longest retry.
	DuplicateWindow time.Duration

	// RequestTimeout bounds each request to the broker (publish, ack,
	// stream look-up, fetch) that the caller's context leaves unbounded.
	// Zero selects the backend's default; programmatic options given to
	// the backend take precedence.
	RequestTimeout time.Duration
}

// GapChecker is an optional interface a Source implements to promise that its
// ControlVersions are dense: every position from the feed's first to its head
// holds an event unless the feed deleted it (an operator's delete, retention).
// JetStream streams are dense; a file feed is not (its positions may be
// sparse), so it does not implement GapChecker.
//
// For a Source that implements it, a consumer treats an event whose
// ControlVersion is not the previous one + 1 as a possible hole and calls
// CheckGap(ctx, cursor, next). CheckGap returns nil if every position in
// (cursor, next) was deleted from the feed, so skipping them loses nothing
// the feed still holds; an error wrapping ErrGap (a *GapError) if any of them
// still holds a message; or another error if it cannot tell (the consumer
// then applies nothing past cursor and tries again later). If a Source does
// not implement GapChecker, positions may be sparse and consumers only check
// that they ascend.
type GapChecker interface {
	CheckGap(ctx context.Context, cursor, next uint64) error
}
