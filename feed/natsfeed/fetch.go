package natsfeed

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
)

// apiPrefix is the JetStream API prefix (jetstream.New without a domain).
const apiPrefix = "$JS.API."

// fetchResult is the answer to one no-wait pull request.
type fetchResult struct {
	// msgs are the delivered messages, in arrival order.
	msgs []*nats.Msg
	// complete is true when the server finished answering: the batch
	// filled, or it said it had nothing more ("404 No Messages"). Only
	// then are msgs everything the consumer delivered for the request;
	// otherwise (the answer did not end in time: a stalled link, a slow
	// broker) the consumer may have delivered more that never arrived.
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

// fetch sends one no-wait pull request for up to batch messages to the
// consumer and reads the answer until it is complete, or until ctx or
// RequestTimeout ends the wait (then the result is incomplete, with no
// error, unless nothing arrived: then the error says so).
//
// It speaks the pull protocol itself rather than through jetstream's
// FetchNoWait, which ends after a second without a message and without an
// error or a way to tell that the answer was cut short. Each request gets a
// fresh inbox, so messages the server sends to an abandoned request are
// dropped by the client instead of mixing with a later one.
func (s *Source) fetch(ctx context.Context, consumer string, batch int) (fetchResult, error) {
	var r fetchResult
	nc := s.c.nc
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return r, fmt.Errorf("subscribe %s: %w", inbox, err)
	}
	defer sub.Unsubscribe()
	// A batch must never be dropped as a slow consumer: a dropped message
	// is a hole (detected, but costly).
	_ = sub.SetPendingLimits(-1, -1)
	req := strconv.AppendInt([]byte(`{"batch":`), int64(batch), 10)
	req = append(req, `,"no_wait":true}`...)
	subj := apiPrefix + "CONSUMER.MSG.NEXT." + s.c.cfg.Stream + "." + consumer
	if err := nc.PublishRequest(subj, inbox, req); err != nil {
		return r, fmt.Errorf("pull request: %w", err)
	}
	rctx, cancel := s.c.reqCtx(ctx)
	defer cancel()
	if r.msgs == nil {
		r.msgs = make([]*nats.Msg, 0, min(batch, 64))
	}
	for len(r.msgs) < batch {
		m, err := sub.NextMsgWithContext(rctx)
		if err != nil {
			if ctx.Err() != nil {
				return r, ctx.Err()
			}
			if len(r.msgs) == 0 {
				if errors.Is(err, context.DeadlineExceeded) {
					err = fmt.Errorf("no answer%s: %w", s.c.timeoutState(err), err)
				}
				return r, err
			}
			return r, nil // incomplete: use what arrived
		}
		if m.Reply == "" {
			// A status: deliveries carry their ack subject as reply.
			code := m.Header.Get("Status")
			switch code {
			case "404":
				r.complete = true
				return r, nil
			case "100":
				continue // heartbeat or flow control
			}
			if len(r.msgs) > 0 {
				return r, nil // ended early: incomplete, use what arrived
			}
			if code == "503" {
				return r, &pullStatusError{code: code, description: "No Responders (the consumer or JetStream is not available)"}
			}
			return r, &pullStatusError{code: code, description: m.Header.Get("Description")}
		}
		r.msgs = append(r.msgs, m)
	}
	r.complete = true
	return r, nil
}

// ack sends an acknowledgement for the delivery whose ack subject is reply,
// without waiting for the server.
func (s *Source) ack(reply string) error {
	return s.c.nc.Publish(reply, ackBody)
}

var ackBody = []byte("+ACK")
