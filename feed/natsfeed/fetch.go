package natsfeed

import (
	"fmt"

	"github.com/nats-io/nats.go"
)

// apiPrefix is the JetStream API prefix (jetstream.New without a domain).
const apiPrefix = "$JS.API."

// fetchResult is what one Poll took from its reading session (see
// session.take).
type fetchResult struct {
	// msgs are the delivered messages, in arrival order.
	msgs []*nats.Msg
	// complete is true when a no-wait request was answered in full (its
	// batch filled, or the server said it had nothing more, "404 No
	// Messages") and msgs are everything that had arrived: nothing the
	// consumer delivered before is still to come. Otherwise more may
	// still arrive, on the same session, in order.
	complete bool
}

// pullStatusError is a status the server ended a pull request with that is
// neither a delivery nor "no more messages".
type pullStatusError struct {
	code, description string
}

func (e *pullStatusError) Error() string {
	return fmt.Sprintf("pull request ended with status %s %s", e.code, e.description)
}

// transient reports statuses that go away by themselves: no responders
// (the consumer or JetStream is not there right now), a leadership change,
// too many waiting requests.
func (e *pullStatusError) transient() bool {
	switch e.code {
	case "503", "408":
		return true
	case "409":
		return e.description == "Leadership Change" || e.description == "Exceeded MaxWaiting"
	}
	return false
}

// ack sends an acknowledgement for the delivery whose ack subject is reply,
// without waiting for the server.
func (s *Source) ack(reply string) error {
	return s.c.nc.Publish(reply, ackBody)
}

var ackBody = []byte("+ACK")
