package trust

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"runtime"
	"sync"

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
	extra, _, _, err := splitExtra(e)
	if err != nil {
		return e, head, err
	}
	l := head.Next()
	body := eventBody(e, extra, l)
	sig := k.sign(signedMessage(EventPayloadType, body, k.id))
	e, err = withSignature(e, extra, wireSig{V: 1, KeyID: k.id, Seq: l.Seq, Prev: l.Prev, Sig: base64.StdEncoding.EncodeToString(sig)})
	if err != nil {
		return e, head, err
	}
	return e, Head{Seq: l.Seq, Digest: Digest(body)}, nil
}

// Unsigned returns e without its signature member (what the producer wrote).
func Unsigned(e controlevent.Event) (controlevent.Event, error) {
	extra, _, _, err := splitExtra(e)
	if err != nil {
		return e, err
	}
	e.Extra = extra
	return e, nil
}

// SignBatch signs events in order after head, as Sign does one at a time,
// with the ed25519 signatures computed on up to GOMAXPROCS goroutines (the
// chain digests, which each depend on the one before, are computed first,
// in order). It returns the signed events and the head after each. If the
// event at index i cannot be signed (see Sign), it returns the first i
// events, their heads and the error.
func SignBatch(k *PrivateKey, events []controlevent.Event, head Head) ([]controlevent.Event, []Head, error) {
	type prepared struct {
		e     controlevent.Event
		extra string
		body  []byte
		l     Link
		sig   []byte
	}
	ps := make([]prepared, 0, len(events))
	heads := make([]Head, 0, len(events))
	var failed error
	for _, e := range events {
		extra, _, _, err := splitExtra(e)
		if err != nil {
			failed = err
			break
		}
		l := head.Next()
		body := eventBody(e, extra, l)
		ps = append(ps, prepared{e: e, extra: extra, body: body, l: l})
		head = Head{Seq: l.Seq, Digest: Digest(body)}
		heads = append(heads, head)
	}
	workers := min(runtime.GOMAXPROCS(0), len(ps))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(ps); i += workers {
				ps[i].sig = k.sign(signedMessage(EventPayloadType, ps[i].body, k.id))
			}
		}()
	}
	wg.Wait()
	out := make([]controlevent.Event, 0, len(ps))
	for i, p := range ps {
		e, err := withSignature(p.e, p.extra, wireSig{V: 1, KeyID: k.id, Seq: p.l.Seq, Prev: p.l.Prev, Sig: base64.StdEncoding.EncodeToString(p.sig)})
		if err != nil {
			return out, heads[:i], err
		}
		out = append(out, e)
	}
	return out, heads, failed
}

// withSignature returns e with Extra set to extra plus the signature member.
func withSignature(e controlevent.Event, extra string, ws wireSig) (controlevent.Event, error) {
	raw, err := json.Marshal(ws)
	if err != nil { // not reached: wireSig marshals
		return e, fmt.Errorf("trust: sign %.80q: %w", e.EventID, err)
	}
	m, _ := (controlevent.Event{Extra: extra}).ExtraFields()
	fields := make(map[string]any, len(m)+1)
	for n, v := range m {
		fields[n] = v
	}
	fields[SignatureMember] = json.RawMessage(raw)
	x, err := controlevent.EncodeExtra(fields)
	if err != nil {
		return e, fmt.Errorf("trust: sign %.80q: %w", e.EventID, err)
	}
	e.Extra = x
	return e, nil
}
