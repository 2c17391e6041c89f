package trust

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
)

// EventPayloadType is the DSSE payload type of a signed event. Its version
// changes whenever the body encoding does.
const EventPayloadType = "application/vnd.controlfeed.event.v1"

// SignatureMember is the name of the extra member that carries an event's
// signature (see the package documentation for its form). A producer's own
// extra member of that name is refused by Sign.
const SignatureMember = "controlfeed_sig"

// digestPrefix starts every chain digest.
const digestPrefix = "sha256:"

// PAE returns DSSE's pre-authentication encoding of a payload type and a
// body: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body.
func PAE(payloadType string, body []byte) []byte {
	b := make([]byte, 0, 32+len(payloadType)+len(body))
	b = append(b, "DSSEv1 "...)
	b = strconv.AppendInt(b, int64(len(payloadType)), 10)
	b = append(b, ' ')
	b = append(b, payloadType...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, ' ')
	return append(b, body...)
}

// appendField appends one body line: name "=" LEN ":" value "\n".
func appendField[V string | []byte](b []byte, name string, value V) []byte {
	b = append(b, name...)
	b = append(b, '=')
	b = strconv.AppendInt(b, int64(len(value)), 10)
	b = append(b, ':')
	b = append(b, value...)
	return append(b, '\n')
}

// Link is an event's place in its producer's chain: its sequence number
// (1 for the first signed event) and the chain digest of its predecessor
// ("" for seq 1).
type Link struct {
	Seq  uint64
	Prev string
}

// EventBody returns the canonical body of e at link (see the package
// documentation). It fails when e's Extra is malformed or already carries a
// signature member that is not the one being replaced (callers strip it
// first: see unsignedExtra).
func EventBody(e controlevent.Event, l Link) ([]byte, error) {
	extra, _, _, err := splitExtra(e)
	if err != nil {
		return nil, err
	}
	return eventBody(e, extra, l), nil
}

func eventBody(e controlevent.Event, extra string, l Link) []byte {
	return appendEventBody(nil, e, extra, l)
}

// appendEventBody appends e's canonical body at l to b, growing b once at
// most (not at all when it has the room): the verifier builds one per
// event in a reused buffer.
func appendEventBody(b []byte, e controlevent.Event, extra string, l Link) []byte {
	var num [64]byte // a decimal number or an RFC 3339 time
	b = slices.Grow(b, 256+len(e.EventID)+len(e.Type)+len(e.Key)+len(e.ArtifactRef)+len(e.Checksum)+len(e.CreatedAtRaw)+len(extra)+len(l.Prev))
	b = appendField(b, "event_id", e.EventID)
	b = appendField(b, "type", e.Type)
	b = appendField(b, "key", e.Key)
	b = appendField(b, "version", strconv.AppendInt(num[:0], e.Version, 10))
	b = appendField(b, "base_version", strconv.AppendInt(num[:0], e.BaseVersion, 10))
	b = appendField(b, "artifact_ref", e.ArtifactRef)
	b = appendField(b, "checksum", e.Checksum)
	if e.CreatedAtRaw != "" {
		b = appendField(b, "created_at", e.CreatedAtText())
	} else { // CreatedAtText's own form, with no string allocated
		b = appendField(b, "created_at", e.CreatedAt.AppendFormat(num[:0], time.RFC3339Nano))
	}
	b = appendField(b, "extra", extra)
	b = appendField(b, "seq", strconv.AppendUint(num[:0], l.Seq, 10))
	b = appendField(b, "prev", l.Prev)
	return b
}

// Digest returns the chain digest of an event body: "sha256:" and the hex
// of its sha256.
func Digest(body []byte) string {
	sum := sha256.Sum256(body)
	var b [len(digestPrefix) + 2*sha256.Size]byte
	copy(b[:], digestPrefix)
	hex.Encode(b[len(digestPrefix):], sum[:])
	return string(b[:])
}

// signedMessage is what the producer's key signs: PAE of the body followed
// by the producer line.
func signedMessage(payloadType string, body []byte, kid string) []byte {
	full := appendField(append([]byte(nil), body...), "producer", kid)
	return PAE(payloadType, full)
}

// wireSig is the JSON form of the signature member.
type wireSig struct {
	V     int    `json:"v"`
	KeyID string `json:"kid"`
	Seq   uint64 `json:"seq"`
	Prev  string `json:"prev"`
	Sig   string `json:"sig"`
}

// splitExtra returns e's canonical Extra without the signature member, and
// the signature member's raw JSON (has is false when it is absent). The
// common case (a canonical Extra, as every decoded event has) is a scan of
// the text, which allocates only when another member follows the signature;
// the rest goes through encoding/json.
func splitExtra(e controlevent.Event) (rest, sig string, has bool, err error) {
	x, err := controlevent.CanonicalExtra(e.Extra)
	if err != nil {
		return "", "", false, fmt.Errorf("trust: event %.80q: %w", e.EventID, err)
	}
	if rest, sig, has, ok := cutMember(x, SignatureMember); ok {
		return rest, sig, has, nil
	}
	m, err := e.ExtraFields()
	if err != nil {
		return "", "", false, fmt.Errorf("trust: event %.80q: %w", e.EventID, err)
	}
	raw, ok := m[SignatureMember]
	if !ok {
		return x, "", false, nil
	}
	delete(m, SignatureMember)
	rest, _, err = canonical(m)
	return rest, string(raw), true, err
}

// cutMember finds the top-level member name of the canonical JSON object x
// and returns x without it and the member's value (has: it was there). ok
// is false when x is not an object the scan understands; callers then take
// the slow path. x without a member of that name is returned whole.
func cutMember(x, name string) (rest, val string, has, ok bool) {
	if x == "" {
		return "", "", false, true
	}
	if x[0] != '{' || x[len(x)-1] != '}' {
		return "", "", false, false
	}
	key := `"` + name + `":`
	depth, inStr := 0, false
	for i := 0; i < len(x); i++ {
		c := x[i]
		if inStr {
			switch c {
			case '\\':
				i++
			case '"':
				inStr = false
			}
			continue
		}
		switch c {
		case '"':
			if depth == 1 && (x[i-1] == '{' || x[i-1] == ',') && strings.HasPrefix(x[i:], key) {
				vs := i + len(key)
				ve, good := valueEnd(x, vs)
				if !good {
					return "", "", false, false
				}
				val = x[vs:ve]
				switch {
				case x[i-1] == '{' && x[ve] == '}':
					return "", val, true, true // the only member
				case x[i-1] == '{':
					return x[:i] + x[ve+1:], val, true, true // first: drop the comma after it
				default:
					return x[:i-1] + x[ve:], val, true, true // later: drop the comma before it
				}
			}
			inStr = true
		case '{', '[':
			depth++
		case '}', ']':
			depth--
		}
	}
	return x, "", false, true
}

// valueEnd returns the index just past the JSON value starting at i in x,
// which must be followed by ',' or '}'.
func valueEnd(x string, i int) (int, bool) {
	depth, inStr := 0, false
	for j := i; j < len(x); j++ {
		c := x[j]
		if inStr {
			switch c {
			case '\\':
				j++
			case '"':
				inStr = false
			}
			continue
		}
		switch c {
		case '"':
			inStr = true
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return j, j > i
			}
			depth--
		case ',':
			if depth == 0 {
				return j, j > i
			}
		}
	}
	return 0, false
}

func canonical(m map[string]json.RawMessage) (string, json.RawMessage, error) {
	if len(m) == 0 {
		return "", nil, nil
	}
	fields := make(map[string]any, len(m))
	for k, v := range m {
		fields[k] = v
	}
	x, err := controlevent.EncodeExtra(fields)
	if err != nil {
		return "", nil, fmt.Errorf("trust: %w", err)
	}
	return x, nil, nil
}
