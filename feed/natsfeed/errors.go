package natsfeed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/feed"
)

// ErrNodeNameInUse is wrapped by the error Poll returns while another
// process holds this node name's lease (see NodeInUseError).
var ErrNodeNameInUse = errors.New("natsfeed: node name in use by another process")

// NodeInUseError reports that another live process consumes as this node:
// it holds the node name's lease. The Source stands by: Poll fails with this
// error, without touching the node's consumer, until the other process stops
// (or its lease expires), then takes over on a later Poll. It wraps
// ErrNodeNameInUse and feed.ErrUnavailable: nothing is wrong with any event,
// the node just cannot consume now.
type NodeInUseError struct {
	// Node is the configured node name; Consumer its durable consumer.
	Node, Consumer string
	// Host, PID and Since describe the holder as it recorded itself.
	Host  string
	PID   int
	Since time.Time
}

// Error names the node, the holder and what to do.
func (e *NodeInUseError) Error() string {
	since := "unknown time"
	if !e.Since.IsZero() {
		since = e.Since.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("natsfeed: node name %q (consumer %q) is in use by another process (host %q, pid %d, since %s); "+
		"this one stands by and reads nothing until that process stops. If both are meant to run, give each its own node name",
		e.Node, e.Consumer, e.Host, e.PID, since)
}

// Unwrap makes errors.Is match ErrNodeNameInUse and feed.ErrUnavailable.
func (e *NodeInUseError) Unwrap() []error { return []error{ErrNodeNameInUse, feed.ErrUnavailable} }

// ErrNoStream is wrapped, together with feed.ErrUnavailable, by Poll while
// the feed stream does not exist. A Source never creates the stream (nor
// the lease bucket before it): the producer's Sink does, with the
// configured replicas, so a node started first waits, unavailable, instead
// of creating an R1 stream on a cluster.
var ErrNoStream = errors.New("natsfeed: the feed stream does not exist yet")

// noStreamError is Poll's error for a missing stream.
func noStreamError(stream string) error {
	return &unavailableError{err: fmt.Errorf("natsfeed: stream %q: %w; the producer (a jetstream feed sink) creates it, and this node waits until then "+
		"(check --nats-stream and --nats-url if the producer runs)", stream, ErrNoStream)}
}

// ErrWrongSubject is wrapped by the error a Source's Poll returns while the
// feed stream stores none of its subject (NATSConfig.Subject, the daemon's
// --nats-subject): the consumer would filter every event out, and the node
// would read nothing while it looked healthy.
var ErrWrongSubject = errors.New("natsfeed: the feed stream stores no message on the configured subject")

// wrongSubjectError is ErrWrongSubject for stream (with its subjects) and
// subject; it is unavailable (the node waits, reporting it), like a stream
// that does not exist yet.
func wrongSubjectError(stream string, subjects []string, subject string) error {
	return &unavailableError{err: fmt.Errorf("natsfeed: stream %q stores the subjects %q, none of which covers %q: %w; "+
		"give this node the producer's --nats-subject (or --nats-stream)", stream, subjects, subject, ErrWrongSubject)}
}

// ReplicasError is returned by NewSink when the existing feed stream has a
// replica count other than the configured one (NATSConfig.Replicas, the
// daemon's --nats-replicas). The Sink never changes an existing stream: a
// node or an operator may have created it, and an R1 stream on a cluster
// silently loses the feed's durability. The fix is either to change the
// stream with the nats CLI command Error names, or to configure the
// stream's actual count to accept it. package natsobject reports the
// artifact bucket's mismatch with the same message shape.
type ReplicasError struct {
	// Kind is "stream" (the feed) or "bucket" (artifacts); Name the stream
	// or bucket name; Stream the JetStream stream to edit.
	Kind, Name, Stream string
	// Have is the existing count, Want the configured one.
	Have, Want int
}

// Error names the counts and both remedies.
func (e *ReplicasError) Error() string {
	return fmt.Sprintf("natsfeed: existing %s %q has %d replica(s) but %d are configured (--nats-replicas %d); "+
		"the producer does not change it: change it with `nats stream edit %s --replicas %d`, "+
		"or configure --nats-replicas %d to use it as it is",
		e.Kind, e.Name, e.Have, e.Want, e.Want, e.Stream, e.Want, e.Have)
}

// unavailableError marks err as an outage (feed.ErrUnavailable) without
// changing its message.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string   { return e.err.Error() }
func (e *unavailableError) Unwrap() []error { return []error{e.err, feed.ErrUnavailable} }

// classify wraps err with feed.ErrUnavailable when it means the broker could
// not be reached or did not answer in time (a timeout, no responders, a lost
// connection, no JetStream quorum or leader), unless ctx was canceled by the
// caller (then the caller is stopping: not an outage). nil stays nil.
func classify(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, feed.ErrUnavailable) || errors.Is(ctx.Err(), context.Canceled) {
		return err
	}
	if isUnavailable(err) {
		return &unavailableError{err: err}
	}
	return err
}

// API error codes of JetStream that mean "try again later": the system, the
// cluster, the stream or the consumer has no quorum or leader, or no peers.
var unavailableCodes = map[jetstream.ErrorCode]bool{
	10005: true, // no suitable peers for placement
	10006: true, // JetStream cluster not active
	10008: true, // JetStream system temporarily unavailable
	10009: true, // JetStream cluster not leader
	10023: true, // insufficient resources
	10118: true, // stream offline
	10119: true, // consumer offline
	10194: true, // stream offline (with a reason)
	10195: true, // consumer offline (with a reason)
}

func isUnavailable(err error) bool {
	for _, target := range []error{
		context.DeadlineExceeded, nats.ErrTimeout, nats.ErrNoResponders, nats.ErrDisconnected,
		nats.ErrConnectionReconnecting, nats.ErrConnectionClosed, nats.ErrConnectionDraining,
		nats.ErrReconnectBufExceeded, nats.ErrStaleConnection, nats.ErrNoServers,
		jetstream.ErrNoStreamResponse, jetstream.ErrAsyncPublishTimeout,
		// jetstream reports "no responders" on its API as "not enabled":
		// during a failover that is an outage, and a server truly
		// without JetStream is one too, from the node's side.
		jetstream.ErrJetStreamNotEnabled,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.Code == 503 || unavailableCodes[apiErr.ErrorCode]) {
		return true
	}
	var ps *pullStatusError
	if errors.As(err, &ps) && ps.transient() {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
