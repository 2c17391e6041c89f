package controlevent

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// MaxEncodedSize bounds the size of one encoded event accepted by Decode.
// Events carry references, never payloads, so a real event is a few hundred
// bytes.
const MaxEncodedSize = 64 << 10

// Marshal encodes e in the wire format (see the package documentation).
func Marshal(e Event) ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("controlevent: encode event %q: %w", e.EventID, err)
	}
	return b, nil
}

// Decode parses one event from its wire format. It rejects input larger than
// MaxEncodedSize, anything but a single JSON object, and trailing data. It
// does not call Validate: callers decide which rules apply (Validate on the
// consumer side, ValidateUnpublished on the producer side). A syntax error
// wraps ErrInvalid.
func Decode(b []byte) (Event, error) {
	var e Event
	if len(b) > MaxEncodedSize {
		return e, fmt.Errorf("controlevent: decode: %d bytes exceeds the %d-byte limit for one event: %w", len(b), MaxEncodedSize, ErrInvalid)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&e); err != nil {
		return Event{}, fmt.Errorf("controlevent: decode: %v: %w", err, ErrInvalid)
	}
	if len(bytes.TrimSpace(b[dec.InputOffset():])) != 0 {
		return Event{}, fmt.Errorf("controlevent: decode: trailing data after the event object: %w", ErrInvalid)
	}
	return e, nil
}
