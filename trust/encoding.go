package trust

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

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
func appendField(b []byte, name, value string) []byte {
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
	extra, _, err := splitExtra(e)
	if err != nil {
		return nil, err
	}
	return eventBody(e, extra, l), nil
}

func eventBody(e controlevent.Event, extra string, l Link) []byte {
	b := make([]byte, 0, 256+len(e.Key)+len(extra))
	b = appendField(b, "event_id", e.EventID)
	b = appendField(b, "type", e.Type)
	b = appendField(b, "key", e.Key)
	b = appendField(b, "version", strconv.FormatInt(e.Version, 10))
	b = appendField(b, "base_version", strconv.FormatInt(e.BaseVersion, 10))
	b = appendField(b, "artifact_ref", e.ArtifactRef)
	b = appendField(b, "checksum", e.Checksum)
	b = appendField(b, "created_at", e.CreatedAtText())
	b = appendField(b, "extra", extra)
	b = appendField(b, "seq", strconv.FormatUint(l.Seq, 10))
	b = appendField(b, "prev", l.Prev)
	return b
}

// Digest returns the chain digest of an event body: "sha256:" and the hex
// of its sha256.
func Digest(body []byte) string {
	sum := sha256.Sum256(body)
	return digestPrefix + hex.EncodeToString(sum[:])
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
// the signature member's raw JSON (nil when absent). The common case (a
// canonical Extra, as every decoded event has) is a scan of the text; the
// rest goes through encoding/json.
func splitExtra(e controlevent.Event) (rest string, sig json.RawMessage, err error) {
	x, err := controlevent.CanonicalExtra(e.Extra)
	if err != nil {
		return "", nil, fmt.Errorf("trust: event %.80q: %w", e.EventID, err)
	}
	if rest, sig, ok := cutMember(x, SignatureMember); ok {
		return rest, sig, nil
	}
	m, err := e.ExtraFields()
	if err != nil {
		return "", nil, fmt.Errorf("trust: event %.80q: %w", e.EventID, err)
	}
	sig, ok := m[SignatureMember]
	if !ok {
		return x, nil, nil
	}
	delete(m, SignatureMember)
	rest, _, err = canonical(m)
	return rest, sig, err
}

// cutMember finds the top-level member name of the canonical JSON object x
// and returns x without it and the member's value. ok is false when x is
// not an object the scan understands; callers then take the slow path. x
// without a member of that name is returned whole with a nil value.
func cutMember(x, name string) (rest string, val json.RawMessage, ok bool) {
	if x == "" {
		return "", nil, true
	}
	if x[0] != '{' || x[len(x)-1] != '}' {
		return "", nil, false
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
					return "", nil, false
				}
				val = json.RawMessage(x[vs:ve])
				switch {
				case x[i-1] == '{' && x[ve] == '}':
					return "", val, true // the only member
				case x[i-1] == '{':
					return x[:i] + x[ve+1:], val, true // first: drop the comma after it
				default:
					return x[:i-1] + x[ve:], val, true // later: drop the comma before it
				}
			}
			inStr = true
		case '{', '[':
			depth++
		case '}', ']':
			depth--
		}
	}
	return x, nil, true
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
