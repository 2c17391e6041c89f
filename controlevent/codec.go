package controlevent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxEncodedSize bounds the size of one encoded event accepted by Decode.
// Events carry references, never payloads, so a real event is a few hundred
// bytes.
const MaxEncodedSize = 64 << 10

// Marshal encodes e in the wire format (see the package documentation).
//
// The bytes are exactly those json.Marshal(e) produces, for every Event: the
// same field order, omitempty rules, string escaping (including <, >, &,
// U+2028, U+2029 and invalid UTF-8) and time format. Stored digests of the
// encoding (such as the applier's event digest) therefore do not depend on
// which of the two produced it. (Built with GOEXPERIMENT=jsonv2,
// encoding/json writes invalid UTF-8 as a raw U+FFFD rather than \ufffd;
// Marshal keeps the default encoder's bytes, so digests stay stable.)
//
// It fails, as json.Marshal does and with the same error, only when
// CreatedAt cannot be written as RFC 3339 (a year outside [0,9999] or a
// zone offset of 24 hours or more). The returned slice is newly allocated and
// owned by the caller. It is safe for concurrent use.
func Marshal(e Event) ([]byte, error) {
	b, ok := appendEvent(make([]byte, 0, encodedSizeHint(e)), e)
	if ok {
		return b, nil
	}
	return marshalJSON(e)
}

// AppendJSON appends the wire encoding of e to dst and returns the extended
// slice. The appended bytes are exactly those Marshal returns. On error dst
// is returned unchanged (its length is unchanged; bytes beyond it in its
// capacity may have been written). It lets a caller that hashes or batches
// encodings reuse one buffer. It is safe for concurrent use on distinct dst.
func AppendJSON(dst []byte, e Event) ([]byte, error) {
	b, ok := appendEvent(dst, e)
	if ok {
		return b, nil
	}
	enc, err := marshalJSON(e)
	if err != nil {
		return dst, err
	}
	return append(dst, enc...), nil
}

// marshalJSON is the reference encoder: the fallback of Marshal and
// AppendJSON, and the baseline their tests and benchmarks compare against.
func marshalJSON(e Event) ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("controlevent: encode event %q: %w", e.EventID, err)
	}
	return b, nil
}

// encodedSizeHint is the length of the encoding of e when its strings need
// no escapes: every field name and its punctuation (128 bytes), the strings,
// the numbers and at most 35 bytes of time.
func encodedSizeHint(e Event) int {
	return 128 + 35 + len(e.EventID) + len(e.Type) + len(e.Key) + len(e.ArtifactRef) + len(e.Checksum) +
		decimalLen(uint64(e.Version)) + decimalLen(uint64(e.BaseVersion)) + decimalLen(e.ControlVersion)
}

// decimalLen bounds the length of v in decimal, also when v is a negative
// int64 converted to uint64 (20 digits: as many as the sign needs).
func decimalLen(v uint64) int {
	n := 1
	for ; v >= 10; v /= 10 {
		n++
	}
	return n
}

// appendEvent writes what json.Marshal(e) would write. It reports false,
// with dst's prefix intact, when CreatedAt is not valid RFC 3339; the caller
// then defers to encoding/json, which produces the error.
func appendEvent(dst []byte, e Event) ([]byte, bool) {
	n0 := len(dst)
	b := append(dst, `{"event_id":`...)
	b = appendJSONString(b, e.EventID)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, e.Type)
	if e.Key != "" {
		b = append(b, `,"key":`...)
		b = appendJSONString(b, e.Key)
	}
	if e.Version != 0 {
		b = append(b, `,"version":`...)
		b = strconv.AppendInt(b, e.Version, 10)
	}
	if e.BaseVersion != 0 {
		b = append(b, `,"base_version":`...)
		b = strconv.AppendInt(b, e.BaseVersion, 10)
	}
	if e.ArtifactRef != "" {
		b = append(b, `,"artifact_ref":`...)
		b = appendJSONString(b, e.ArtifactRef)
	}
	if e.Checksum != "" {
		b = append(b, `,"checksum":`...)
		b = appendJSONString(b, e.Checksum)
	}
	b = append(b, `,"control_version":`...)
	b = strconv.AppendUint(b, e.ControlVersion, 10)
	b = append(b, `,"created_at":"`...)
	t0 := len(b)
	b = e.CreatedAt.AppendFormat(b, time.RFC3339Nano)
	if !strictRFC3339(b[t0:]) {
		return dst[:n0], false
	}
	b = append(b, `"}`...)
	return b, true
}

// strictRFC3339 reports whether ts, written by AppendFormat(RFC3339Nano), is
// one time.Time.MarshalJSON accepts: the same checks as the standard
// library's appendStrictRFC3339.
func strictRFC3339(ts []byte) bool {
	if len(ts) < len("2006-01-02T15:04:05Z") || ts[len("9999")] != '-' {
		return false // year outside [0,9999]
	}
	if ts[len(ts)-1] == 'Z' {
		return true
	}
	c := ts[len(ts)-len("Z07:00")]
	hh := ts[len(ts)-len("07:00"):]
	if '0' <= c && c <= '9' || 10*(hh[0]-'0')+(hh[1]-'0') >= 24 {
		return false // zone hour outside [0,23]
	}
	return true
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as encoding/json writes a string with HTML
// escaping on (json.Marshal's default): a copy of its appendString.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '\\', '"':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default: // other control characters, <, > and &
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// Decode parses one event from its wire format. It rejects input larger than
// MaxEncodedSize, anything but a single JSON object (null included), and
// anything after it but JSON whitespace (space, tab, CR, LF). It
// does not call Validate: callers decide which rules apply (Validate on the
// consumer side, ValidateUnpublished on the producer side). A syntax error
// wraps ErrInvalid.
//
// Decoding follows encoding/json exactly (field names match
// case-insensitively, unknown fields are ignored, the last of duplicate
// fields wins, null leaves a field zero, and only what json.Unmarshal
// accepts is accepted); a fast path handles the canonical
// form Marshal writes and returns the same Event encoding/json would. It is
// safe for concurrent use and does not retain b.
func Decode(b []byte) (Event, error) {
	if len(b) > MaxEncodedSize {
		return Event{}, fmt.Errorf("controlevent: decode: %d bytes exceeds the %d-byte limit for one event: %w", len(b), MaxEncodedSize, ErrInvalid)
	}
	if e, ok := decodeFast(b); ok {
		return e, nil
	}
	return decodeJSON(b)
}

// decodeJSON is the reference decoder: the fallback of Decode for anything
// decodeFast does not take, and the baseline its tests compare against.
func decodeJSON(b []byte) (Event, error) {
	var e Event
	if len(b) > MaxEncodedSize {
		return e, fmt.Errorf("controlevent: decode: %d bytes exceeds the %d-byte limit for one event: %w", len(b), MaxEncodedSize, ErrInvalid)
	}
	if i := skipSpace(b, 0); i < len(b) && b[i] != '{' && json.Valid(b) {
		return Event{}, fmt.Errorf("controlevent: decode: the input is not a JSON object: %w", ErrInvalid)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&e); err != nil {
		return Event{}, fmt.Errorf("controlevent: decode: %v: %w", err, ErrInvalid)
	}
	// Only JSON whitespace may follow, as json.Unmarshal requires: not
	// U+00A0, U+2028 or the other spaces bytes.TrimSpace would remove.
	if skipSpace(b, int(dec.InputOffset())) != len(b) {
		return Event{}, fmt.Errorf("controlevent: decode: trailing data after the event object: %w", ErrInvalid)
	}
	return e, nil
}

// Field numbers of the fast decoder, one bit each in its seen-set.
const (
	fEventID = iota
	fType
	fKey
	fVersion
	fBaseVersion
	fArtifactRef
	fChecksum
	fControlVersion
	fCreatedAt
	numStringFields = 5 // event_id, type, key, artifact_ref, checksum
)

func fieldOf(name []byte) int {
	switch string(name) { // no allocation: the compiler compares in place
	case "event_id":
		return fEventID
	case "type":
		return fType
	case "key":
		return fKey
	case "version":
		return fVersion
	case "base_version":
		return fBaseVersion
	case "artifact_ref":
		return fArtifactRef
	case "checksum":
		return fChecksum
	case "control_version":
		return fControlVersion
	case "created_at":
		return fCreatedAt
	}
	return -1
}

// stringSlot maps a string field to its index in decodeFast's span table.
func stringSlot(f int) int {
	switch f {
	case fEventID:
		return 0
	case fType:
		return 1
	case fKey:
		return 2
	case fArtifactRef:
		return 3
	case fChecksum:
		return 4
	}
	return -1
}

// decodeFast decodes the canonical form: one JSON object whose keys are
// the exact lower-case field names, each at most once, with strings free of
// escapes, control characters and invalid UTF-8, integer literals in range,
// and a created_at that time.Time.UnmarshalJSON accepts; JSON whitespace may
// appear between tokens and after the object. It reports false for anything
// else, and the caller falls back to encoding/json, which then either
// decodes the input (the same way it would have anyway) or produces the
// error. When it reports true, the Event equals what decodeJSON returns.
func decodeFast(b []byte) (Event, bool) {
	var e Event
	var spans [numStringFields][2]int
	var seen uint16
	strLen := 0
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return Event{}, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		i++
	} else {
		for {
			// Key: a plain string naming a field not seen yet.
			if i >= len(b) || b[i] != '"' {
				return Event{}, false
			}
			j := i + 1
			for j < len(b) && b[j] != '"' && b[j] != '\\' {
				j++
			}
			if j >= len(b) || b[j] != '"' {
				return Event{}, false
			}
			f := fieldOf(b[i+1 : j])
			if f < 0 || seen&(1<<f) != 0 {
				return Event{}, false
			}
			seen |= 1 << f
			i = skipSpace(b, j+1)
			if i >= len(b) || b[i] != ':' {
				return Event{}, false
			}
			i = skipSpace(b, i+1)

			// Value.
			var ok bool
			switch f {
			case fVersion:
				e.Version, i, ok = scanInt64(b, i)
			case fBaseVersion:
				e.BaseVersion, i, ok = scanInt64(b, i)
			case fControlVersion:
				e.ControlVersion, i, ok = scanUint64(b, i)
			case fCreatedAt:
				var end int
				if end, ok = scanTimeLiteral(b, i); ok {
					// encoding/json hands the raw literal, quotes included, to
					// UnmarshalJSON; so do we, so the Time (and its Location)
					// is the same.
					ok = e.CreatedAt.UnmarshalJSON(b[i:end]) == nil
					i = end
				}
			default:
				var start, end int
				if start, end, ok = scanPlainString(b, i); ok {
					spans[stringSlot(f)] = [2]int{start, end}
					strLen += end - start
					i = end + 1
				}
			}
			if !ok {
				return Event{}, false
			}

			i = skipSpace(b, i)
			if i >= len(b) {
				return Event{}, false
			}
			if b[i] == ',' {
				i = skipSpace(b, i+1)
				continue
			}
			if b[i] != '}' {
				return Event{}, false
			}
			i++
			break
		}
	}
	if skipSpace(b, i) != len(b) {
		return Event{}, false
	}

	// One allocation holds every string field.
	if strLen > 0 {
		var sb strings.Builder
		sb.Grow(strLen)
		for _, sp := range spans {
			sb.Write(b[sp[0]:sp[1]])
		}
		all := sb.String()
		off := 0
		next := func(slot int) string {
			n := spans[slot][1] - spans[slot][0]
			s := all[off : off+n]
			off += n
			return s
		}
		e.EventID = next(0)
		e.Type = next(1)
		e.Key = next(2)
		e.ArtifactRef = next(3)
		e.Checksum = next(4)
	}
	return e, true
}

// skipSpace returns the index of the first non-JSON-whitespace byte at or
// after i.
func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// scanPlainString scans a JSON string at b[i] that encoding/json would
// decode to its raw bytes: no escapes, no control characters, valid UTF-8.
// It returns the bounds of the contents; b[end] is the closing quote.
func scanPlainString(b []byte, i int) (start, end int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return 0, 0, false
	}
	start = i + 1
	ascii := true
	for j := start; j < len(b); j++ {
		c := b[j]
		switch {
		case c == '"':
			if !ascii && !utf8.Valid(b[start:j]) {
				return 0, 0, false
			}
			return start, j, true
		case c == '\\' || c < 0x20:
			return 0, 0, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return 0, 0, false
}

// scanTimeLiteral scans a JSON string at b[i] without escapes or control
// characters and returns the index just past its closing quote.
func scanTimeLiteral(b []byte, i int) (end int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return j + 1, true
		case c == '\\' || c < 0x20 || c >= utf8.RuneSelf:
			return 0, false
		}
	}
	return 0, false
}

// scanUint64 scans a JSON integer literal without sign at b[i]: "0" or a
// digit string without leading zeros that fits in a uint64. It does not
// look past the digits; the caller checks what follows.
func scanUint64(b []byte, i int) (v uint64, next int, ok bool) {
	if i >= len(b) || b[i] < '0' || b[i] > '9' {
		return 0, i, false
	}
	if b[i] == '0' {
		i++
		return 0, i, i >= len(b) || !isNumberByte(b[i])
	}
	for ; i < len(b) && '0' <= b[i] && b[i] <= '9'; i++ {
		d := uint64(b[i] - '0')
		if v > (1<<64-1-d)/10 {
			return 0, i, false // overflow: encoding/json reports it
		}
		v = v*10 + d
	}
	return v, i, i >= len(b) || !isNumberByte(b[i])
}

// scanInt64 is scanUint64 with an optional minus sign, for int64 fields.
func scanInt64(b []byte, i int) (v int64, next int, ok bool) {
	neg := i < len(b) && b[i] == '-'
	if neg {
		i++
	}
	u, i, ok := scanUint64(b, i)
	if !ok {
		return 0, i, false
	}
	if neg {
		if u > 1<<63 {
			return 0, i, false
		}
		return -int64(u), i, true // -(1<<63) wraps to itself, the minimum int64
	}
	if u > 1<<63-1 {
		return 0, i, false
	}
	return int64(u), i, true
}

// isNumberByte reports whether c could continue a JSON number: a digit,
// fraction or exponent. Those forms take the encoding/json path.
func isNumberByte(c byte) bool {
	return '0' <= c && c <= '9' || c == '.' || c == 'e' || c == 'E' || c == '-' || c == '+'
}
