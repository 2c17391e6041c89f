package natsfeed

import (
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/controlevent"
)

// DecodeMessage turns a stream message into an event: body is the event's
// JSON (controlevent.Decode), seq its stream sequence, which becomes the
// ControlVersion (a control_version in the body is ignored). If the message
// carries a Nats-Msg-Id header it must equal the body's event_id. The result
// must pass controlevent.Event.Validate. Errors name the sequence and wrap
// controlevent.ErrInvalid.
func DecodeMessage(seq uint64, hdr nats.Header, body []byte) (controlevent.Event, error) {
	if seq == 0 {
		return controlevent.Event{}, fmt.Errorf("natsfeed: decode message at stream sequence 0: %w", controlevent.ErrInvalid)
	}
	e, err := controlevent.DecodePublished(body, seq)
	if err != nil {
		return controlevent.Event{}, fmt.Errorf("natsfeed: decode message at stream sequence %d: %w", seq, err)
	}
	if id := hdr.Get(jetstream.MsgIDHeader); id != "" && id != e.EventID {
		return controlevent.Event{}, fmt.Errorf("natsfeed: decode message at stream sequence %d: header %s %q differs from event_id %q: %w",
			seq, jetstream.MsgIDHeader, id, e.EventID, controlevent.ErrInvalid)
	}
	return e, nil
}
