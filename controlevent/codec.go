package controlevent

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxEncodedSize bounds the size of one encoded event accepted by Decode.
// Events carry references, never payloads, so a real event is a few hundred
// bytes.
const MaxEncodedSize = 64 << 10

// Marshal encodes e in the wire format (see the package documentation):
// the known members in a fixed order, then the members of Extra in their
// canonical form. CreatedAtRaw, when set, is written instead of CreatedAt.
//
// The bytes are exactly those json.Marshal(e) produces, for every Event
// (Event implements json.Marshaler with Marshal). For an Event with an empty
// Extra and CreatedAtRaw they are also those json.Marshal writes for a
// plain struct with Event's field tags: the same field order, omitempty
// rules, string escaping (including <, >, &, U+2028, U+2029 and invalid
// UTF-8 as \ufffd) and time format, so stored digests of such events (the
// applier's event digest) are those of earlier releases.
//
// It fails, with an error wrapping ErrInvalid, when CreatedAtRaw is set but
// is not a JSON string literal, when Extra is not a JSON object or names a
// member twice or a known member, and when CreatedAtRaw is empty and
// CreatedAt cannot be written as RFC 3339 (a year outside [0,9999] or a
// zone offset of 24 hours or more). The returned slice is newly allocated and
// owned by the caller. It is safe for concurrent use.
func Marshal(e Event) ([]byte, error) {
	b, err := appendEvent(make([]byte, 0, encodedSizeHint(e)), e)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// AppendJSON appends the wire encoding of e to dst and returns the extended
// slice. The appended bytes are exactly those Marshal returns. On error dst
// is returned unchanged (its length is unchanged; bytes beyond it in its
// capacity may have been written). It lets a caller that hashes or batches
// encodings reuse one buffer. It is safe for concurrent use on distinct dst.
func AppendJSON(dst []byte, e Event) ([]byte, error) {
	b, err := appendEvent(dst, e)
	if err != nil {
		return dst, err
	}
	return b, nil
}

// MarshalJSON implements json.Marshaler with Marshal, so encoding/json
// writes the wire format too, Extra and CreatedAtRaw included.
func (e Event) MarshalJSON() ([]byte, error) {
	return Marshal(e)
}

// UnmarshalJSON implements json.Unmarshaler with Decode, so encoding/json
// reads the wire format with Decode's rules. As the json.Unmarshaler
// convention asks, a JSON null leaves e unchanged. On error e is unchanged.
func (e *Event) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	ev, err := Decode(b)
	if err != nil {
		return err
	}
	*e = ev
	return nil
}

// encodedSizeHint is the length of the encoding of e when its strings need
// no escapes: every field name and its punctuation (128 bytes), the strings,
// the numbers and at most 35 bytes of time.
func encodedSizeHint(e Event) int {
	return 128 + 35 + len(e.EventID) + len(e.Type) + len(e.Key) + len(e.ArtifactRef) + len(e.Checksum) +
		len(e.CreatedAtRaw) + len(e.Extra) +
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

func encodeErr(e Event, reason error) error {
	id := e.EventID
	if len(id) > 64 {
		id = id[:64] + "..."
	}
	return fmt.Errorf("controlevent: encode event %q: %v: %w", id, reason, ErrInvalid)
}

// appendEvent writes the encoding of e after dst. On error it returns dst's
// prefix intact.
func appendEvent(dst []byte, e Event) ([]byte, error) {
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
	if e.CreatedAtRaw == "" {
		b = append(b, `,"created_at":"`...)
		t0 := len(b)
		b = e.CreatedAt.AppendFormat(b, time.RFC3339Nano)
		if !strictRFC3339(b[t0:]) {
			_, err := e.CreatedAt.MarshalJSON()
			if err == nil { // not reached: both apply the same rules
				err = errors.New("created_at is not valid RFC 3339")
			}
			return dst[:n0], encodeErr(e, fmt.Errorf("created_at: %w", err))
		}
		b = append(b, '"')
	} else {
		if err := checkRawTime(e.CreatedAtRaw); err != nil {
			return dst[:n0], encodeErr(e, err)
		}
		b = append(b, `,"created_at":`...)
		b = appendHTMLSafe(b, e.CreatedAtRaw)
	}
	if e.Extra != "" {
		x, err := canonicalExtra(e.Extra)
		if err != nil {
			return dst[:n0], encodeErr(e, err)
		}
		if x != "" {
			b = append(b, ',')
			b = append(b, x[1:len(x)-1]...)
		}
	}
	return append(b, '}'), nil
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

// canonicalTime reports whether s, a created_at string that
// time.Time.UnmarshalText accepted, is exactly what Marshal writes for the
// parsed time: "2006-01-02T15:04:05", then a fraction of 1 to 9 digits
// without trailing zeros, or none, then "Z" or an offset "±hh:mm" other
// than ±00:00 (written "Z") with hh below 24 (which Marshal refuses) and mm
// below 60. Since the parser accepted s, separators at the canonical
// places mean digits between them (it reads the month, day, minute and
// second as exactly two digits and the hour as one or two).
func canonicalTime(s []byte) bool {
	const base = len("2006-01-02T15:04:05")
	if len(s) <= base || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return false
	}
	r := s[base:]
	if r[0] == '.' {
		n := 1
		for n < len(r) && '0' <= r[n] && r[n] <= '9' {
			n++
		}
		if n == 1 || n > 10 || r[n-1] == '0' {
			return false
		}
		r = r[n:]
	}
	if len(r) == 1 {
		return r[0] == 'Z'
	}
	if len(r) != len("+07:00") || r[0] != '+' && r[0] != '-' || r[3] != ':' {
		return false
	}
	for _, c := range [...]byte{r[1], r[2], r[4], r[5]} {
		if c < '0' || c > '9' {
			return false
		}
	}
	hh := 10*(r[1]-'0') + (r[2] - '0')
	mm := 10*(r[4]-'0') + (r[5] - '0')
	return hh < 24 && mm < 60 && hh+mm != 0
}

const hexDigits = "0123456789abcdef"

// htmlSafe marks the ASCII bytes encoding/json writes as they are in a
// string with HTML escaping on (its htmlSafeSet); bytes from 0x80 up are
// false and take the UTF-8 path.
var htmlSafe = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// asciiPlain marks the ASCII bytes that stand for themselves inside a JSON
// string: all but control characters, '"' and '\\'.
var asciiPlain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendJSONString appends s as encoding/json writes a string with HTML
// escaping on (json.Marshal's default): a copy of its appendString.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if htmlSafe[c] {
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

// appendHTMLSafe appends JSON text s with <, >, &, U+2028 and U+2029
// escaped, as json.HTMLEscape and json.Marshal's compaction do.
func appendHTMLSafe(dst []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '<' || c == '>' || c == '&' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			start = i + 1
		}
		if c == 0xE2 && i+2 < len(s) && s[i+1] == 0x80 && s[i+2]&^1 == 0xA8 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[s[i+2]&0xF])
			start = i + 3
			i += 2
		}
	}
	return append(dst, s[start:]...)
}

// htmlSafeLen is len(appendHTMLSafe(nil, s)).
func htmlSafeLen(s string) int {
	n := len(s)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '<' || c == '>' || c == '&':
			n += len(`\u003c`) - 1
		case c == 0xE2 && i+2 < len(s) && s[i+1] == 0x80 && s[i+2]&^1 == 0xA8:
			n += len(`\u2028`) - 3
			i += 2
		}
	}
	return n
}

// checkRawTime reports whether raw is a CreatedAtRaw Marshal can write: one
// JSON string literal, nothing else.
func checkRawTime(raw string) error {
	if end, _, ok := scanString(raw, 0); !ok || end != len(raw) {
		return fmt.Errorf("created_at as written (%q) is not one JSON string literal", truncate(raw))
	}
	return nil
}

// Decode parses one event from its wire format (see the package
// documentation for the rules, and where they are stricter than
// encoding/json). It rejects input larger than MaxEncodedSize, anything but
// a single JSON object followed by JSON whitespace, duplicate member names
// and names that differ from a known member's only in case; every such
// error (and every other error) wraps ErrInvalid, starts with
// "controlevent: decode:", and comes with the zero Event. It keeps the
// members it does not know in Extra and a created_at written otherwise than
// Marshal writes it in CreatedAtRaw. It does not call Validate: callers
// decide which rules apply (Validate on the consumer side,
// ValidateUnpublished on the producer side).
//
// A fast path handles what Marshal and common producers write (strings
// without escapes, compact unknown members, any whitespace between the
// members, as in json.MarshalIndent's layout) without encoding/json;
// anything else goes through encoding/json.
// Both return the same Event. It is safe for concurrent use and does not
// retain b.
func Decode(b []byte) (Event, error) {
	if len(b) > MaxEncodedSize {
		return Event{}, fmt.Errorf("controlevent: decode: %d bytes exceeds the %d-byte limit for one event: %w", len(b), MaxEncodedSize, ErrInvalid)
	}
	if e, ok := decodeFast(b); ok {
		return e, nil
	}
	return decodeSlow(b)
}

// DecodePublished is Decode followed by setting ControlVersion to
// controlVersion (the position the feed gives the event; a control_version
// in b is ignored) and Validate: a Source's way to turn a stored event into
// the one it returns. It does not check again what the decoder has checked
// (the canonical form of the extra members it kept), so it costs less than
// the two calls; the result and the error are theirs. Errors wrap
// ErrInvalid. It is safe for concurrent use and does not retain b.
func DecodePublished(b []byte, controlVersion uint64) (Event, error) {
	if len(b) > MaxEncodedSize {
		return Event{}, fmt.Errorf("controlevent: decode: %d bytes exceeds the %d-byte limit for one event: %w", len(b), MaxEncodedSize, ErrInvalid)
	}
	e, fast := decodeFast(b)
	if !fast {
		var err error
		if e, err = decodeSlow(b); err != nil {
			return Event{}, err
		}
	}
	e.ControlVersion = controlVersion
	if err := e.validate(fast); err != nil {
		return Event{}, err
	}
	return e, nil
}

// Field numbers of the decoders, one bit each in their seen-sets.
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

// knownNames are the wire names of Event's fields, by field number.
var knownNames = [...]string{"event_id", "type", "key", "version", "base_version", "artifact_ref", "checksum", "control_version", "created_at"}

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

// foldsToKnown returns the known member name that name equals up to case
// and Unicode simple folding (the rule encoding/json matches field names
// by), or "" when there is none. Call it only for a name that is not
// exactly a known one.
func foldsToKnown(name string) string {
	for _, k := range knownNames {
		if strings.EqualFold(name, k) {
			return k
		}
	}
	return ""
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

// extraSpan locates one unknown member in decodeFast's input: the name's
// contents and the value.
type extraSpan struct{ ns, ne, vs, ve int32 }

// maxFastDepth bounds the nesting of an unknown member's value on the fast
// path; deeper values take encoding/json's path.
const maxFastDepth = 32

// decodeFast decodes the forms Marshal and common producers write: one JSON
// object whose known members have their exact lower-case names, each at
// most once, with strings free of escapes, control characters and invalid
// UTF-8 and integer literals in range; whose unknown members have plain
// lower-case ASCII names (plainName) and compact values that need no HTML
// escaping; and whose created_at is a string without escapes or characters
// that need HTML escaping. JSON whitespace may appear between tokens of the
// top-level object and after it. It reports false for anything else, and
// the caller falls back to decodeSlow, which then either decodes the input
// (the same way) or produces the error. When it reports true, the Event
// equals what decodeSlow returns.
func decodeFast(b []byte) (Event, bool) {
	var e Event
	var spans [numStringFields][2]int
	var rawTime [2]int // CreatedAtRaw's literal, when kept
	var extraBuf [4]extraSpan
	extras := extraBuf[:0]
	var seen uint16
	strLen, extraLen := 0, 0
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return Event{}, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		i++
	} else {
		for {
			// Name: a string without escapes.
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
			ns, ne := i+1, j
			f := fieldOf(b[ns:ne])
			if f >= 0 {
				if seen&(1<<f) != 0 {
					return Event{}, false
				}
				seen |= 1 << f
			} else if !plainName(b[ns:ne]) && !keptName(string(b[ns:ne])) {
				return Event{}, false
			}
			i = skipSpace(b, j+1)
			if i >= len(b) || b[i] != ':' {
				return Event{}, false
			}
			i = skipSpace(b, i+1)

			// Value.
			var ok bool
			switch f {
			case -1:
				var end int
				if end, ok = scanCompactValue(b, i, 0); ok {
					extras = append(extras, extraSpan{int32(ns), int32(ne), int32(i), int32(end)})
					extraLen += ne - ns + len(`"":,`) + end - i
					i = end
				}
			case fVersion:
				e.Version, i, ok = scanInt64(b, i)
			case fBaseVersion:
				e.BaseVersion, i, ok = scanInt64(b, i)
			case fControlVersion:
				e.ControlVersion, i, ok = scanUint64(b, i)
			case fCreatedAt:
				var end int
				var flags int
				if end, flags, ok = scanString(b, i); ok && flags == 0 {
					s := b[i+1 : end-1]
					if len(s) == 0 || e.CreatedAt.UnmarshalText(s) != nil || !canonicalTime(s) {
						rawTime = [2]int{i, end}
						strLen += end - i
					}
					i = end
				} else {
					ok = false
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
	if len(extras) > 1 {
		slices.SortFunc(extras, func(x, y extraSpan) int {
			return bytes.Compare(b[x.ns:x.ne], b[y.ns:y.ne])
		})
		for k := 1; k < len(extras); k++ {
			if bytes.Equal(b[extras[k-1].ns:extras[k-1].ne], b[extras[k].ns:extras[k].ne]) {
				return Event{}, false // a duplicate: decodeSlow reports it
			}
		}
	}
	if len(extras) > 0 {
		strLen += extraLen + 1 // braces, minus the last comma
	}

	// One allocation holds every string field.
	if strLen > 0 {
		var sb strings.Builder
		sb.Grow(strLen)
		for _, sp := range spans {
			sb.Write(b[sp[0]:sp[1]])
		}
		sb.Write(b[rawTime[0]:rawTime[1]])
		for k, x := range extras {
			if k == 0 {
				sb.WriteByte('{')
			} else {
				sb.WriteByte(',')
			}
			sb.WriteByte('"')
			sb.Write(b[x.ns:x.ne])
			sb.WriteString(`":`)
			sb.Write(b[x.vs:x.ve])
		}
		if len(extras) > 0 {
			sb.WriteByte('}')
		}
		all := sb.String()
		off := 0
		next := func(n int) string {
			s := all[off : off+n]
			off += n
			return s
		}
		e.EventID = next(spans[0][1] - spans[0][0])
		e.Type = next(spans[1][1] - spans[1][0])
		e.Key = next(spans[2][1] - spans[2][0])
		e.ArtifactRef = next(spans[3][1] - spans[3][0])
		e.Checksum = next(spans[4][1] - spans[4][0])
		e.CreatedAtRaw = next(rawTime[1] - rawTime[0])
		e.Extra = all[off:]
	}
	return e, true
}

// plainName reports whether name, the contents of a member name without
// escapes, is one the fast path keeps as is: printable ASCII without upper
// case letters (so it cannot fold to a known name unless it is one) and
// without the characters encoding/json escapes (", \, <, >, &).
func plainName[T string | []byte](name T) bool {
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c < 0x20 || c >= 0x7f || 'A' <= c && c <= 'Z' || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// keptName reports whether n, the contents of a member name written
// without escapes, is one json.Marshal writes back unchanged (no control
// characters, ", \\, <, >, &, U+2028 or U+2029; valid UTF-8) and that does
// not equal a known member's name up to case. Call it only for a name that
// is not exactly a known one.
func keptName(n string) bool {
	if plainName(n) {
		return true
	}
	for i := 0; i < len(n); i++ {
		if c := n[i]; c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return utf8.ValidString(n) && !strings.ContainsRune(n, '\u2028') && !strings.ContainsRune(n, '\u2029') && foldsToKnown(n) == ""
}

// skipSpace returns the index of the first non-JSON-whitespace byte at or
// after i.
func skipSpace[T string | []byte](b T, i int) int {
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
		if asciiPlain[c] {
			continue
		}
		switch {
		case c == '"':
			if !ascii && !utf8.Valid(b[start:j]) {
				return 0, 0, false
			}
			return start, j, true
		case c >= utf8.RuneSelf:
			ascii = false
		default: // a backslash or a control character
			return 0, 0, false
		}
	}
	return 0, 0, false
}

// Flags scanString reports about a string literal.
const (
	strEscape = 1 << iota // has a backslash escape
	strHTML               // has <, >, &, U+2028 or U+2029, which encoding/json escapes
)

// strSpecial marks the bytes scanString must look at: the closing quote,
// escapes, control characters, and the characters (or first byte of
// U+2028 and U+2029) that encoding/json escapes for HTML.
var strSpecial = func() (t [256]bool) {
	for c := 0; c < 0x20; c++ {
		t[c] = true
	}
	for _, c := range []byte{'"', '\\', '<', '>', '&', 0xE2} {
		t[c] = true
	}
	return t
}()

// scanString scans a valid JSON string literal at b[i] (escapes checked,
// no control characters; bytes above 0x7f are taken as they are, as
// encoding/json does) and returns the index just past its closing quote.
func scanString[T string | []byte](b T, i int) (end, flags int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return 0, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		c := b[j]
		if !strSpecial[c] {
			continue
		}
		switch {
		case c == '"':
			return j + 1, flags, true
		case c == '\\':
			flags |= strEscape
			j++
			if j >= len(b) {
				return 0, 0, false
			}
			switch b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if j+4 >= len(b) {
					return 0, 0, false
				}
				for k := j + 1; k <= j+4; k++ {
					if !isHex(b[k]) {
						return 0, 0, false
					}
				}
				j += 4
			default:
				return 0, 0, false
			}
		case c < 0x20:
			return 0, 0, false
		case c == 0xE2:
			if j+2 < len(b) && b[j+1] == 0x80 && b[j+2]&^1 == 0xA8 {
				flags |= strHTML
			}
		default: // <, >, &
			flags |= strHTML
		}
	}
	return 0, 0, false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// scanCompactValue scans a JSON value at b[i] that is already in the form
// json.Marshal writes a json.RawMessage in: no whitespace, no characters
// that need HTML escaping, nesting below maxFastDepth. It returns the index
// just past it. It reports false for every other value, valid or not.
func scanCompactValue[T string | []byte](b T, i, depth int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch c := b[i]; {
	case c == '"':
		end, flags, ok := scanString(b, i)
		return end, ok && flags&strHTML == 0
	case c == '-' || '0' <= c && c <= '9':
		return scanNumber(b, i)
	case c == 't':
		return scanLiteral(b, i, "true")
	case c == 'f':
		return scanLiteral(b, i, "false")
	case c == 'n':
		return scanLiteral(b, i, "null")
	case c == '[' || c == '{':
		if depth+1 >= maxFastDepth {
			return 0, false
		}
		closer := byte(']')
		if c == '{' {
			closer = '}'
		}
		i++
		if i < len(b) && b[i] == closer {
			return i + 1, true
		}
		for {
			var ok bool
			if c == '{' {
				var flags int
				if i, flags, ok = scanString(b, i); !ok || flags&strHTML != 0 || i >= len(b) || b[i] != ':' {
					return 0, false
				}
				i++
			}
			if i, ok = scanCompactValue(b, i, depth+1); !ok || i >= len(b) {
				return 0, false
			}
			switch b[i] {
			case ',':
				i++
			case closer:
				return i + 1, true
			default:
				return 0, false
			}
		}
	}
	return 0, false
}

// scanLiteral scans the literal lit (true, false, null) at b[i].
func scanLiteral[T string | []byte](b T, i int, lit string) (int, bool) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return 0, false
	}
	return i + len(lit), true
}

// scanNumber scans a JSON number at b[i]:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func scanNumber[T string | []byte](b T, i int) (int, bool) {
	digits := func(i int) int {
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		return i
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		i = digits(i)
	default:
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(i + 1)
		if j == i+1 {
			return 0, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(i)
		if j == i {
			return 0, false
		}
		i = j
	}
	return i, true
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
