// Package natsfeed is the NATS JetStream feed backend, registered as
// "jetstream" for both Source and Sink. Events are messages of one JetStream
// stream; an event's ControlVersion is its stream sequence.
//
// Activate it with a blank import and open it through package feed with the
// NATS fields of feed.SourceConfig, or call NewSource/NewSink directly (which
// also accept an existing *nats.Conn).
//
// # Configuration
//
// feed.NATSConfig zero values select these defaults:
//
//   - URLs: nats.DefaultURL ("nats://127.0.0.1:4222").
//   - Stream "CONTROLFEED", Subject "controlfeed.events". The stream should
//     carry only the feed's subject: Head and Wait report the stream's last
//     sequence.
//   - Replicas 1: right for a single server; use 3 on a cluster so the feed
//     survives the loss of a server (at the cost of a quorum write per
//     event).
//   - DuplicateWindow 24h: how long JetStream remembers an EventID. It must
//     outlast the pump's longest retry; the pump backs off to at most 5s, so
//     any outage shorter than the window still deduplicates. A longer window
//     costs server memory (one entry per event published in the window).
//   - MaxAge and MaxBytes 0: unlimited retention. Every node can then always
//     catch up by replay, at the cost of disk on the servers. With a limit,
//     a node whose cursor falls behind the retained range gets
//     feed.ErrCursorBehindRetention and must be re-bootstrapped.
//   - NodeName: names the node's durable consumer (see DurableName). Empty
//     makes the Source a read-only observer on an ephemeral consumer without
//     acks (see NewSource), for tools like "controlfeed tail"; a fleet node
//     always sets it. Unused by the Sink.
//
// # Who creates the stream
//
// Only the Sink (the producer) creates the stream, and it looks before it
// creates: NewSink reads the existing stream's configuration and, when the
// stream exists, checks it without any create or update request. It must be
// file-backed with limits retention, its subjects must cover ours, its
// duplicate window must be at least the configured one, and its replica
// count must equal Replicas: a different count is a *ReplicasError naming
// the `nats stream edit` command that fixes it (or the count to configure
// to accept it), because an R1 stream on a cluster loses the feed with one
// server. Other differences (MaxAge, MaxBytes, discard, extra subjects) are
// logged and tolerated: the operator may have tuned them on purpose. A
// missing stream is created (file storage, limits retention, discard old,
// the configured limits and replicas).
//
// A Source never creates the stream, and never creates the lease bucket
// (see below) before the stream exists: until the producer has created it,
// Poll fails with an error wrapping ErrNoStream and feed.ErrUnavailable, so
// a node started first waits, shown unavailable, and retries, and the
// stream gets the producer's replicas, not the node's.
//
// # Delivery semantics
//
// Sink.Append publishes with the Nats-Msg-Id header set to the EventID and
// the Nats-Expected-Stream header set to the stream name, and returns the
// PubAck's stream sequence. JetStream answers a duplicate (same EventID within
// the window) with the original sequence, so a retry resolves to the same
// ControlVersion.
//
// AppendBatch pipelines a window of events with PublishAsync over one
// connection. Pipelining alone does not keep feed order across a
// disconnect: nats.go drops the bytes it had not written when the
// connection broke and sends the publishes made meanwhile once it
// reconnects, so a later event could be stored before an earlier one that
// the caller then retries. Every publish of a window but the first therefore
// carries Nats-Expected-Last-Msg-Id, the previous event's EventID: the
// server stores the event only if its predecessor is the stream's last
// message and refuses it (and with it every later one of the window)
// otherwise. A window starts only once every event before it is
// acknowledged, so its first needs no check. The server checks duplicates
// before the expectation, so a retried event already in the stream still
// resolves to its original sequence. A refusal because another publisher's
// message came in between restarts the window at the refused event (which
// was not stored); a lost publish ends AppendBatch at the first
// unacknowledged event, and the caller (the pump) retries from it. Hence an
// event is stored only after every event before it, within a call and, as
// the pump retries from its first unpublished row, across calls.
//
// The Source is one durable pull consumer per node (named after NodeName) with
// AckAll policy, filtered on the subject, starting at the node's cursor + 1.
// It reads the consumer through a session: one subscription that receives
// the answers of all its pull requests for as long as the consumer stays
// where the Source left it. While the node catches up, Poll sends one
// no-wait pull request for up to Options.FetchBatch messages and returns
// what it answered. Once a no-wait request found nothing more, the session
// keeps one waiting pull request open (1024 messages, an expiry of at most
// 30s and within the node name's lease, idle heartbeats), so the server
// delivers each new event as soon as it is stored: Wait returns when it has
// arrived and Poll takes it from the session without a request, so a
// steady-state event costs one delivery. A Poll that finds nothing
// buffered sends a no-wait request, as during catch-up. Poll keeps each
// message's ack handle keyed by EventID, and decodes the body as a
// controlevent JSON object whose ControlVersion is the message's stream
// sequence (a control_version in the body is ignored). Messages at or below
// the cursor (redeliveries of applied events) are acknowledged and dropped.
// The session ends, and the next Poll reconciles the consumer with the
// cursor, after any Poll error, a reconnect, a silent or refused open
// request, a repositioning, or the loss of the node name's lease.
//
// A stall is not a gap. The server marks messages delivered when it sends
// them; if the link stalls, a client that gives up on the request never
// sees them, and nothing redelivers them before AckWait. Poll therefore
// reads the pull answers itself (rather than through jetstream's
// FetchNoWait, which ends silently after a second, or Consume, which hides
// what was cut short), all on the session's one subscription, in the order
// the consumer sent them, and knows whether a no-wait answer is complete:
// the batch filled, or the server said it had no more. It then requires
// the delivered stream sequences to be contiguous from the cursor:
// a position between the cursor and a delivered event, or between two of
// them, may be skipped only if the stream holds no message of the feed's
// subject there (deleted, expired, or another subject of a shared stream),
// which one request (a get of the next message on the subject) tells. A
// message that was delivered but did not arrive, or that another client
// took from the consumer, breaks this: Poll returns the events before it
// and repositions the consumer at the next Poll, so the message is fetched
// again; when it is right after the cursor, Poll repositions at once (twice
// at most) and, should it be skipped again, fails with a *feed.GapError and
// returns nothing past the cursor. A no-wait request that got no answer at
// all in time (RequestTimeout), or whose answer was complete but empty while
// the stream is known to hold more, repositions the consumer too; a partial
// answer does not, since the rest arrives on the same session. So a short
// fetch, a timeout or a slow broker costs a refetch, never an event.
//
// AckAll is chosen because acknowledgements follow apply order: the applier
// acknowledges an event only after it and everything before it committed, so
// acknowledging the highest applied event acknowledges them all in one round
// trip (AckThrough). With explicit acks a catch-up batch would cost one round
// trip per event. Ack is therefore cumulative too. Acks are sent only for
// events Poll returned (Ack, AckThrough) and for redeliveries at or below
// the cursor, and Poll returns only contiguous events, so an ack never
// covers an event the node did not commit.
//
// The consumer's position is reconciled with the cursor the caller passes:
// when Poll's since differs from what the consumer delivered last (first Poll
// after opening, a node restored from a snapshot, a halted applier re-polling
// from an older cursor, a consumer deleted or a stream recreated, a
// repositioning above), the consumer is reset to since+1 with the consumer
// reset API (nats-server 2.14+; it also drops the consumer's pending acks),
// or created if missing, so the events after since are delivered again,
// immediately. On a server without that API the consumer is deleted and
// recreated with start sequence since+1 instead. Unacknowledged messages are
// also redelivered by the server after AckWait (Options.AckWait).
//
// The Source implements feed.GapChecker: CheckGap(cursor, next) is nil iff
// no sequence in (cursor, next) holds a message on the feed's subject.
//
// # One consumer per node name
//
// Two processes reading as one node would split its durable consumer's
// messages. A durable Source therefore holds a lease on its node name
// before it touches the consumer: a key (the durable name) in the key/value
// bucket LeaseBucket(stream), created by the first Poll if missing, once
// the feed stream exists and with the stream's replica count (so a node's
// credentials need the right to create it, or an operator creates it),
// with a TTL of Options.LeaseTTL (10s). The key is created only if
// absent and renewed by compare-and-set on its revision every third of the
// TTL, in the background, so it stays held while the node waits for events.
// Its value names the holder (host, pid, start time) and a subject it
// answers on.
//
// A second process with the same node name stands by: its Poll fails with
// a *NodeInUseError (errors.Is ErrNodeNameInUse and feed.ErrUnavailable)
// naming the holder, without fetching or repositioning anything, so the
// node shows as unavailable with the reason while the holder goes on
// undisturbed. It takes over on a later Poll as soon as the holder is gone:
// at once when the holder closes its Source (the key is deleted) or its
// process exits, even by kill -9 (the server drops its connection, and the
// holder's subject has no responders, twice in a row); after the TTL when
// the holder vanished without closing its connection (a partition, a
// paused VM). A holder that comes back after losing its lease (its renewal
// fails, checked before any fetch once half the TTL has passed or after a
// reconnect) stands by in turn. Whatever the lease does, the contiguity
// check above still keeps any node from skipping an event.
//
// This is why the daemon's default node name, the host name, is safe: a
// restarted container next to its old one, or a second daemon started on
// the same host by mistake, never splits the feed; it waits, visibly, until
// the first is gone. Give every node its own name to run them side by side.
// A Source without NodeName (an observer) takes no lease.
//
// # Errors
//
// If the stream no longer holds the events right after the cursor (the
// stream's first sequence is past since+1 while since+1 is at or below its
// last sequence), Poll returns a *feed.CursorBehindError (errors.Is
// feed.ErrCursorBehindRetention); it never skips ahead. Messages deleted from
// the stream are retention, not a gap. A message the stream holds but the
// consumer will not deliver is a *feed.GapError (feed.ErrGap). A message
// that does not decode as an event is a *feed.InvalidEventError naming its
// stream sequence. Timeouts, no responders, a lost connection and JetStream
// "no quorum / no leader / offline" answers are wrapped with
// feed.ErrUnavailable, by the Source and the Sink (not when the caller's
// context was canceled: that returns ctx's error), so the caller can tell
// an outage from a bad event. Operations after Close return errors wrapping
// feed.ErrClosed. Connection loss surfaces as errors from the calls made
// while disconnected; nats.go reconnects in the background (forever, by
// default) and later calls succeed. Nothing here retries: the pump and the
// applier own retry. The connection's asynchronous errors go to
// Options.Logger at debug level, not to stderr.
package natsfeed

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/internal/natsconn"
)

// Name is the registered name of this backend.
const Name = "jetstream"

// Defaults for feed.NATSConfig zero values.
const (
	DefaultStream          = "CONTROLFEED"
	DefaultSubject         = "controlfeed.events"
	DefaultReplicas        = 1
	DefaultDuplicateWindow = 24 * time.Hour
)

// Defaults for Options zero values.
const (
	DefaultFetchBatch     = 1024
	DefaultMaxAckPending  = 10000
	DefaultAckWait        = 2 * time.Minute
	DefaultRequestTimeout = 5 * time.Second
	DefaultReconnectWait  = 500 * time.Millisecond
	DefaultMaxBatchWindow = 256
)

func init() {
	feed.Register(Name, func(cfg feed.SourceConfig) (feed.Source, error) {
		return NewSource(context.Background(), cfg.NATS, nil)
	})
	feed.RegisterSink(Name, func(cfg feed.SourceConfig) (feed.Sink, error) {
		return NewSink(context.Background(), cfg.NATS, nil)
	})
}

// Options are the programmatic options of NewSource and NewSink. A nil
// *Options or zero fields select the defaults.
type Options struct {
	// Conn is an existing connection to use. The Source or Sink does not
	// close it. Nil means connect to the configured URLs with the configured
	// credentials; Close then closes that connection.
	Conn *nats.Conn
	// Logger receives warnings (a tolerated stream config difference, a
	// cursor ahead of the stream). Nil discards.
	Logger *slog.Logger
	// NATSOptions are appended to the connect options when Conn is nil.
	NATSOptions []nats.Option
	// FetchBatch bounds the events one Poll returns. Default 1024.
	FetchBatch int
	// MaxAckPending is the consumer's limit of delivered, unacknowledged
	// messages; it must exceed FetchBatch. Default 10000.
	MaxAckPending int
	// AckWait is how long the server waits for an ack before redelivering.
	// Redeliveries are harmless (dropped when at or below the cursor), so
	// this trades redelivery traffic for recovery time. Default 2m.
	AckWait time.Duration
	// RequestTimeout bounds each JetStream API request when ctx has no
	// earlier deadline. Default 5s.
	RequestTimeout time.Duration
	// MaxBatchWindow bounds how many publishes AppendBatch has in flight.
	// Default 256.
	MaxBatchWindow int
	// LeaseTTL is the lifetime of the node name's lease (see the package
	// doc): how long a node name stays taken after its holder vanished
	// without closing its connection (a partition, a paused VM). The
	// holder renews it every third of it. Default 10s.
	LeaseTTL time.Duration
}

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.FetchBatch == 0 {
		o.FetchBatch = DefaultFetchBatch
	}
	if o.MaxAckPending == 0 {
		o.MaxAckPending = DefaultMaxAckPending
	}
	if o.AckWait == 0 {
		o.AckWait = DefaultAckWait
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.MaxBatchWindow == 0 {
		o.MaxBatchWindow = DefaultMaxBatchWindow
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
}

// Validate reports an error for negative values or a MaxAckPending not above
// FetchBatch. Zero values are valid (defaults).
func (o Options) Validate() error {
	switch {
	case o.FetchBatch < 0:
		return fmt.Errorf("natsfeed: options: FetchBatch %d is negative", o.FetchBatch)
	case o.MaxAckPending < 0:
		return fmt.Errorf("natsfeed: options: MaxAckPending %d is negative", o.MaxAckPending)
	case o.AckWait < 0:
		return fmt.Errorf("natsfeed: options: AckWait %v is negative", o.AckWait)
	case o.RequestTimeout < 0:
		return fmt.Errorf("natsfeed: options: RequestTimeout %v is negative", o.RequestTimeout)
	case o.MaxBatchWindow < 0:
		return fmt.Errorf("natsfeed: options: MaxBatchWindow %d is negative", o.MaxBatchWindow)
	case o.LeaseTTL < 0 || o.LeaseTTL > 0 && o.LeaseTTL < time.Second:
		return fmt.Errorf("natsfeed: options: LeaseTTL %v must be at least 1s", o.LeaseTTL)
	}
	d := o
	d.setDefaults()
	if d.MaxAckPending <= d.FetchBatch {
		return fmt.Errorf("natsfeed: options: MaxAckPending %d must exceed FetchBatch %d", d.MaxAckPending, d.FetchBatch)
	}
	return nil
}

// resolveConfig applies the defaults to cfg and validates it.
func resolveConfig(cfg feed.NATSConfig) (feed.NATSConfig, error) {
	if cfg.Stream == "" {
		cfg.Stream = DefaultStream
	}
	if cfg.Subject == "" {
		cfg.Subject = DefaultSubject
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = DefaultReplicas
	}
	if cfg.DuplicateWindow == 0 {
		cfg.DuplicateWindow = DefaultDuplicateWindow
	}
	if len(cfg.URLs) == 0 {
		cfg.URLs = []string{nats.DefaultURL}
	}
	switch {
	case strings.ContainsAny(cfg.Stream, " \t\r\n.*>/\\"):
		return cfg, fmt.Errorf("natsfeed: config: stream name %q contains a space, '.', '*', '>' or a path separator", cfg.Stream)
	case strings.ContainsAny(cfg.Subject, " \t\r\n*>") || strings.HasPrefix(cfg.Subject, ".") || strings.HasSuffix(cfg.Subject, ".") || strings.Contains(cfg.Subject, ".."):
		return cfg, fmt.Errorf("natsfeed: config: subject %q must be a literal subject (no wildcards, spaces or empty tokens)", cfg.Subject)
	case cfg.Replicas < 1 || cfg.Replicas > 5:
		return cfg, fmt.Errorf("natsfeed: config: replicas %d is not in 1..5", cfg.Replicas)
	case cfg.MaxAge < 0:
		return cfg, fmt.Errorf("natsfeed: config: max age %v is negative", cfg.MaxAge)
	case cfg.MaxBytes < 0:
		return cfg, fmt.Errorf("natsfeed: config: max bytes %d is negative", cfg.MaxBytes)
	case cfg.DuplicateWindow < 0:
		return cfg, fmt.Errorf("natsfeed: config: duplicate window %v is negative", cfg.DuplicateWindow)
	case cfg.MaxAge > 0 && cfg.DuplicateWindow > cfg.MaxAge:
		return cfg, fmt.Errorf("natsfeed: config: duplicate window %v exceeds max age %v (JetStream requires it to be at most max age)", cfg.DuplicateWindow, cfg.MaxAge)
	case (cfg.TLSCertFile == "") != (cfg.TLSKeyFile == ""):
		return cfg, errors.New("natsfeed: config: TLS cert file and key file must be set together")
	}
	return cfg, nil
}

// conn is the connection and JetStream handle shared by Source and Sink.
type conn struct {
	nc   *nats.Conn
	own  bool
	js   jetstream.JetStream
	cfg  feed.NATSConfig
	opts Options
	log  *slog.Logger
	rec  recovery // see recovery.go
}

func dial(cfg feed.NATSConfig, opts *Options, role string) (*conn, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if cfg.RequestTimeout < 0 {
		return nil, fmt.Errorf("natsfeed: config: request timeout %v is negative", cfg.RequestTimeout)
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = cfg.RequestTimeout
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	o.setDefaults()
	cfg, err := resolveConfig(cfg)
	if err != nil {
		return nil, err
	}
	c := &conn{cfg: cfg, opts: o, log: o.Logger.With("backend", Name, "role", role, "stream", cfg.Stream)}
	if o.Conn != nil {
		c.nc = o.Conn
	} else {
		auth := natsconn.Auth{
			CredsFile: cfg.CredsFile, User: cfg.User, Password: cfg.Password,
			TLSCAFile: cfg.TLSCAFile, TLSCertFile: cfg.TLSCertFile, TLSKeyFile: cfg.TLSKeyFile,
		}
		nopts := natsconn.Options("controlfeed-"+role, DefaultReconnectWait, auth,
			append([]nats.Option{nats.RetryOnFailedConnect(false), nats.ErrorHandler(c.asyncError), nats.Timeout(o.RequestTimeout)},
				o.NATSOptions...)...)
		nc, err := natsconn.Connect("natsfeed: "+role, cfg.URLs, auth, nopts...)
		if err != nil {
			return nil, err
		}
		c.nc, c.own = nc, true
	}
	// Every request and async publish is bounded by RequestTimeout even
	// where no context reaches nats.go.
	js, err := jetstream.New(c.nc, jetstream.WithDefaultTimeout(o.RequestTimeout),
		jetstream.WithPublishAsyncTimeout(o.RequestTimeout))
	if err != nil {
		c.close()
		return nil, fmt.Errorf("natsfeed: %s: jetstream: %w", role, err)
	}
	c.js = js
	return c, nil
}

// asyncError logs the connection's asynchronous errors (a write that failed
// as the link broke, a slow consumer) instead of nats.go's default of
// printing them to stderr.
func (c *conn) asyncError(_ *nats.Conn, sub *nats.Subscription, err error) {
	subject := ""
	if sub != nil {
		subject = sub.Subject
	}
	c.log.Debug("natsfeed: asynchronous connection error", "subject", subject, "err", err)
}

func (c *conn) close() {
	c.closeRecovery()
	if c.own {
		c.nc.Close()
	}
}

// timeoutState describes, for the error of a broker call that timed out,
// the connection (its status and server) and the bound that ended it, as
// " (connection ..., ...)"; for a publish no stream answered (no leader),
// that; it is empty for any other error.
func (c *conn) timeoutState(err error) string {
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoStreamResponse) {
		return " (no server stored it: the stream or bucket has no leader now; is a majority of the cluster's servers down or still electing?)"
	}
	var ne interface{ Timeout() bool }
	if err == nil || !(errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrAsyncPublishTimeout) || errors.As(err, &ne) && ne.Timeout()) {
		return ""
	}
	url := c.nc.ConnectedUrlRedacted()
	if url == "" {
		url = "no server"
	}
	return fmt.Sprintf(" (connection %s, server %s; request timeout %v)", strings.ToLower(c.nc.Status().String()), url, c.opts.RequestTimeout)
}

// reqCtx bounds ctx by RequestTimeout. Once recoveries are watched (see
// recovery.go), a recovery also ends it: a request sent while the broker
// had no leader may never be answered, and waiting out its timeout would
// delay the retry that can now succeed (the call fails with
// context.Canceled while ctx is not done; see interrupted).
//
// A request younger than recoveryGrace is cut only once it is that old: a
// leader election that happens while it is in flight is most often its own
// doing (a new consumer's or bucket's first leader, whose create request is
// answered right after), not an outage it was sent into.
func (c *conn) reqCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	rctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	if ch := c.recoveryChan(); ch != nil {
		sent := time.Now()
		go func() {
			select {
			case <-ch:
				if wait := recoveryGrace - time.Since(sent); wait > 0 {
					t := time.NewTimer(wait)
					defer t.Stop()
					select {
					case <-t.C:
					case <-rctx.Done():
						return
					}
				}
				cancel()
			case <-rctx.Done(): // answered, timed out, or canceled
			}
		}()
	}
	return rctx, cancel
}

// recoveryGrace is how old a request must be before a recovery cuts it
// (see reqCtx).
const recoveryGrace = 500 * time.Millisecond

// interrupted turns the error of a call that a recovery ended (see reqCtx)
// into an outage to retry at once; other errors are returned unchanged.
func interrupted(ctx context.Context, op string, err error) error {
	if err != nil && ctx.Err() == nil && errors.Is(err, context.Canceled) && !errors.Is(err, feed.ErrUnavailable) {
		return &unavailableError{err: fmt.Errorf("natsfeed: %s: the broker recovered while the call waited; retry it: %w", op, err)}
	}
	return err
}

// DurableName returns the durable consumer name used for nodeName: nodeName
// with every character outside [A-Za-z0-9_-] replaced by '_', truncated to
// 64 bytes; when anything was changed, a '-' and 8 hex digits of the
// name's sha256 are appended so distinct node names never share a consumer.
func DurableName(nodeName string) string {
	var b strings.Builder
	changed := false
	for i := 0; i < len(nodeName); i++ {
		ch := nodeName[i]
		if ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '_' || ch == '-' {
			b.WriteByte(ch)
		} else {
			b.WriteByte('_')
			changed = true
		}
	}
	s := b.String()
	if len(s) > 64 {
		s, changed = s[:64], true
	}
	if changed {
		sum := sha256.Sum256([]byte(nodeName))
		s += "-" + hex.EncodeToString(sum[:4])
	}
	return s
}
