package controlevent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// ExtraFields returns the members of e.Extra by name, each value as its
// canonical JSON text (see the package documentation), or nil when Extra is
// empty. The map is newly allocated and owned by the caller. The error wraps
// ErrInvalid when Extra is not what Validate accepts (not a JSON object, a
// duplicate or a known member). It parses Extra on every call: a handler
// reading several members calls it once.
func (e Event) ExtraFields() (map[string]json.RawMessage, error) {
	if e.Extra == "" {
		return nil, nil
	}
	x, err := canonicalExtra(e.Extra)
	if err != nil {
		return nil, e.invalid(err.Error())
	}
	if x == "" {
		return nil, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(x), &m); err != nil { // not reached: x is a canonical object
		return nil, e.invalid(err.Error())
	}
	return m, nil
}

// ExtraField returns the value of the member name of e.Extra as canonical
// JSON text (a string value keeps its quotes: decode it with json.Unmarshal),
// and whether e has such a member. A malformed Extra has no members. Like
// ExtraFields, it parses Extra on every call.
func (e Event) ExtraField(name string) (json.RawMessage, bool) {
	m, err := e.ExtraFields()
	if err != nil {
		return nil, false
	}
	v, ok := m[name]
	return v, ok
}

// EncodeExtra returns the canonical Extra text for fields: the members an
// Event carries besides its own, as json.Marshal writes the map. It returns
// "" for an empty map. It fails when a value cannot be marshalled, when a
// name is a known member of the wire format (also up to case; set the Event
// field instead), and when the text would exceed MaxExtraLen; the last two
// errors wrap ErrInvalid. It is safe for concurrent use.
func EncodeExtra(fields map[string]any) (string, error) {
	if len(fields) == 0 {
		return "", nil
	}
	b, err := json.Marshal(fields)
	if err != nil {
		return "", fmt.Errorf("controlevent: encode extra members: %w", err)
	}
	x, err := canonicalExtra(string(b))
	if err != nil {
		return "", fmt.Errorf("controlevent: encode extra members: %v: %w", err, ErrInvalid)
	}
	if len(x) > MaxExtraLen {
		return "", fmt.Errorf("controlevent: encode extra members: %d bytes; the limit is %d: %w", len(x), MaxExtraLen, ErrInvalid)
	}
	return x, nil
}

// CreatedAtText returns created_at as e carries it: the string CreatedAtRaw
// holds when it is set ("" when CreatedAtRaw is not a JSON string literal),
// otherwise CreatedAt formatted as Marshal writes it (time.RFC3339Nano).
func (e Event) CreatedAtText() string {
	if e.CreatedAtRaw == "" {
		return e.CreatedAt.Format(time.RFC3339Nano)
	}
	var s string
	if checkRawTime(e.CreatedAtRaw) != nil || json.Unmarshal([]byte(e.CreatedAtRaw), &s) != nil {
		return ""
	}
	return s
}

// decodeSlow is Decode for everything decodeFast does not take: the syntax
// is checked by encoding/json, values are decoded by encoding/json, and the
// unknown members are canonicalised by json.Marshal.
func decodeSlow(b []byte) (Event, error) {
	if len(b) > MaxEncodedSize {
		return Event{}, fmt.Errorf("controlevent: decode: %d bytes exceeds the %d-byte limit for one event: %w", len(b), MaxEncodedSize, ErrInvalid)
	}
	if !json.Valid(b) {
		return Event{}, decodeErr(syntaxError(b))
	}
	i := skipSpace(b, 0)
	if b[i] != '{' {
		return Event{}, decodeErr(fmt.Errorf("the input is %s, not a JSON object", kindOf(b[i])))
	}
	var e Event
	var seen uint16
	var extra map[string]json.RawMessage
	err := walkObject(b, i, func(name string, val []byte) error {
		f := knownField(name)
		if f < 0 {
			if k := foldsToKnown(name); k != "" {
				return fmt.Errorf("member %q differs from the known member %q only in case; write it %q (readers disagree on such names)", name, k, k)
			}
			if _, dup := extra[name]; dup {
				return fmt.Errorf("member %q appears twice (readers disagree on which copy counts)", name)
			}
			if extra == nil {
				extra = make(map[string]json.RawMessage)
			}
			extra[name] = val
			return nil
		}
		if seen&(1<<f) != 0 {
			return fmt.Errorf("member %q appears twice (readers disagree on which copy counts)", name)
		}
		seen |= 1 << f
		return e.setKnown(f, val)
	})
	if err != nil {
		return Event{}, decodeErr(err)
	}
	if len(extra) > 0 {
		x, err := json.Marshal(extra)
		if err != nil { // not reached: every value is valid JSON
			return Event{}, decodeErr(err)
		}
		e.Extra = string(x)
	}
	return e, nil
}

func decodeErr(reason error) error {
	return fmt.Errorf("controlevent: decode: %v: %w", reason, ErrInvalid)
}

// setKnown decodes val, a valid JSON value, into the field number f of e
// with encoding/json's rules (null leaves the field zero), except that
// created_at takes any string.
func (e *Event) setKnown(f int, val []byte) error {
	var err error
	switch f {
	case fEventID:
		err = json.Unmarshal(val, &e.EventID)
	case fType:
		err = json.Unmarshal(val, &e.Type)
	case fKey:
		err = json.Unmarshal(val, &e.Key)
	case fVersion:
		err = json.Unmarshal(val, &e.Version)
	case fBaseVersion:
		err = json.Unmarshal(val, &e.BaseVersion)
	case fArtifactRef:
		err = json.Unmarshal(val, &e.ArtifactRef)
	case fChecksum:
		err = json.Unmarshal(val, &e.Checksum)
	case fControlVersion:
		err = json.Unmarshal(val, &e.ControlVersion)
	case fCreatedAt:
		switch val[0] {
		case 'n': // null: the zero time
		case '"':
			var s string
			if err = json.Unmarshal(val, &s); err != nil {
				break
			}
			parsed := s != "" && e.CreatedAt.UnmarshalText([]byte(s)) == nil
			if !parsed || bytes.IndexByte(val, '\\') >= 0 || !canonicalTime(val[1:len(val)-1]) {
				e.CreatedAtRaw = string(appendHTMLSafe(nil, string(val)))
			}
		default:
			err = fmt.Errorf("it is %s; want a string", kindOf(val[0]))
		}
	}
	if err != nil {
		return fmt.Errorf("member %q: %v", knownNames[f], err)
	}
	return nil
}

// canonicalExtra returns the canonical form of x, the text of an Extra: ""
// for "" and for an object without members, x itself when it is canonical
// already (the common case, checked without allocating), else what
// json.Marshal writes for its members. It fails when x is not a JSON
// object, names a member twice, or names a known member (also up to case).
// The errors do not wrap ErrInvalid; callers do.
func canonicalExtra(x string) (string, error) {
	if x == "" || isCanonicalExtra(x) {
		return x, nil
	}
	b := []byte(x)
	if !json.Valid(b) {
		return "", fmt.Errorf("extra members %q are not valid JSON: %v", truncate(x), syntaxError(b))
	}
	i := skipSpace(b, 0)
	if b[i] != '{' {
		return "", fmt.Errorf("extra members are %s, not a JSON object", kindOf(b[i]))
	}
	m := make(map[string]json.RawMessage)
	err := walkObject(b, i, func(name string, val []byte) error {
		if knownField(name) >= 0 {
			return fmt.Errorf("extra member %q is a known member; set the Event field instead", name)
		}
		if k := foldsToKnown(name); k != "" {
			return fmt.Errorf("extra member %q differs from the known member %q only in case", name, k)
		}
		if _, dup := m[name]; dup {
			return fmt.Errorf("extra member %q appears twice", name)
		}
		m[name] = val
		return nil
	})
	if err != nil {
		return "", err
	}
	if len(m) == 0 {
		return "", nil
	}
	c, err := json.Marshal(m)
	if err != nil { // not reached: every value is valid JSON
		return "", err
	}
	return string(c), nil
}

// isCanonicalExtra reports whether x is a non-empty object in canonical form
// whose names are written without escapes (see keptName) and whose values
// nest less than maxFastDepth deep: what decodeFast builds.
func isCanonicalExtra(x string) bool {
	if len(x) < len(`{"":0}`) || x[0] != '{' {
		return false
	}
	i := 1
	prev := ""
	for first := true; ; first = false {
		end, flags, ok := scanString(x, i)
		if !ok || flags != 0 || end >= len(x) || x[end] != ':' {
			return false
		}
		name := x[i+1 : end-1]
		if knownField(name) >= 0 || !keptName(name) || !first && name <= prev {
			return false
		}
		prev = name
		if i, ok = scanCompactValue(x, end+1, 0); !ok || i >= len(x) {
			return false
		}
		switch x[i] {
		case ',':
			i++
		case '}':
			return i == len(x)-1
		default:
			return false
		}
	}
}

// knownField is fieldOf for a decoded name.
func knownField(name string) int {
	for f, k := range knownNames {
		if k == name {
			return f
		}
	}
	return -1
}

// walkObject calls fn for each member of the JSON object at b[i], which
// must be valid JSON (json.Valid), in order, with the decoded name and the
// value as written. It stops at the first error fn returns.
func walkObject(b []byte, i int, fn func(name string, val []byte) error) error {
	i = skipSpace(b, i+1)
	if b[i] == '}' {
		return nil
	}
	for {
		end := skipValue(b, i)
		name := decodeName(b[i:end])
		i = skipSpace(b, skipSpace(b, end)+1) // past the colon
		vend := skipValue(b, i)
		if err := fn(name, b[i:vend]); err != nil {
			return err
		}
		i = skipSpace(b, vend)
		if b[i] == '}' {
			return nil
		}
		i = skipSpace(b, i+1) // past the comma
	}
}

// decodeName decodes a valid JSON string literal as encoding/json does
// (invalid UTF-8 becomes U+FFFD).
func decodeName(lit []byte) string {
	if bytes.IndexByte(lit, '\\') < 0 && utf8.Valid(lit) {
		return string(lit[1 : len(lit)-1])
	}
	var s string
	_ = json.Unmarshal(lit, &s) // cannot fail on a valid literal
	return s
}

// skipValue returns the index just past the valid JSON value at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
	}
	for i < len(b) && (isNumberByte(b[i]) || 'a' <= b[i] && b[i] <= 'z') {
		i++
	}
	return i
}

// skipString returns the index just past the valid JSON string at b[i].
func skipString(b []byte, i int) int {
	for j := i + 1; ; j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
}

// syntaxError returns encoding/json's description of what is wrong with b,
// which json.Valid rejected.
func syntaxError(b []byte) error {
	var v struct{}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	return errors.New("invalid JSON") // not reached
}

// kindOf names the kind of JSON value that starts with c.
func kindOf(c byte) string {
	switch c {
	case 'n':
		return "null"
	case 't', 'f':
		return "a boolean"
	case '"':
		return "a string"
	case '[':
		return "an array"
	case '{':
		return "an object"
	}
	return "a number"
}

// CanonicalExtra returns the canonical form of an Extra text x (see the
// package documentation): x itself, without allocating, when it is
// canonical already (always so for an Event from Decode), "" for "" and an
// empty object. The error wraps ErrInvalid when x is not what Validate
// accepts. It is for code that works on Extra's text, such as a signature
// over it.
func CanonicalExtra(x string) (string, error) {
	c, err := canonicalExtra(x)
	if err != nil {
		return "", fmt.Errorf("controlevent: extra members: %v: %w", err, ErrInvalid)
	}
	return c, nil
}
