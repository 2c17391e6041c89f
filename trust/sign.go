package trust

import (
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/controlfeed/controlfeed/controlevent"
)

// Head is the chain head: the sequence number and chain digest of the last
// signed event a producer published or a node applied (or skipped). The
// zero Head is the chain's start: the next event must be seq 1 with an empty
// prev. A Head is a value; storing it durably next to a cursor is the
// caller's job.
type Head struct {
	Seq    uint64
	Digest string
}

// Next returns the Link the event after h takes.
func (h Head) Next() Link { return Link{Seq: h.Seq + 1, Prev: h.Digest} }

// IsZero reports whether h is the chain's start.
func (h Head) IsZero() bool { return h.Seq == 0 && h.Digest == "" }

// Sign returns e with its signature member set, at the chain position after
// head, and the new head (e's seq and chain digest). e keeps every other
// field; a previous signature member is replaced, so re-signing an event
// (a republish after a crash) is allowed. ed25519 signatures are
// deterministic: the same key, event and head give the same bytes, which
// the broker's idempotent publish then recognises.
//
// Sign fails when e's Extra is malformed or when the signature member would
// push Extra past controlevent.MaxExtraLen. It does not validate the rest of
// e (the pump has done so).
func Sign(k *PrivateKey, e controlevent.Event, head Head) (controlevent.Event, Head, error) {
	extra, _, err := splitExtra(e)
	if err != nil {
		return e, head, err
	}
	l := head.Next()
	body := eventBody(e, extra, l)
	sig := k.sign(signedMessage(EventPayloadType, body, k.id))
	ws := wireSig{V: 1, KeyID: k.id, Seq: l.Seq, Prev: l.Prev, Sig: base64.StdEncoding.EncodeToString(sig)}
	raw, err := json.Marshal(ws)
	if err != nil { // not reached: wireSig marshals
		return e, head, fmt.Errorf("trust: sign %.80q: %w", e.EventID, err)
	}
	m, _ := (controlevent.Event{Extra: extra}).ExtraFields()
	fields := make(map[string]any, len(m)+1)
	for n, v := range m {
		fields[n] = v
	}
	fields[SignatureMember] = json.RawMessage(raw)
	x, err := controlevent.EncodeExtra(fields)
	if err != nil {
		return e, head, fmt.Errorf("trust: sign %.80q: %w", e.EventID, err)
	}
	e.Extra = x
	return e, Head{Seq: l.Seq, Digest: Digest(body)}, nil
}

// Unsigned returns e without its signature member (what the producer wrote).
func Unsigned(e controlevent.Event) (controlevent.Event, error) {
	extra, _, err := splitExtra(e)
	if err != nil {
		return e, err
	}
	e.Extra = extra
	return e, nil
}
