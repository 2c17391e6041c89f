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
