package controlevent_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
)

// sameEvent reports whether a and b are the same value as encoding/json
// would produce it: every field ==, and CreatedAt deeply equal (instant,
// wall/monotonic representation and Location contents; FixedZone locations
// are distinct pointers even for the same offset).
func sameEvent(a, b controlevent.Event) bool {
	ta, tb := a.CreatedAt, b.CreatedAt
	a.CreatedAt, b.CreatedAt = time.Time{}, time.Time{}
	return a == b && reflect.DeepEqual(ta, tb)
}

// The reference codec, built from encoding/json alone and written without
// looking at the production code: the wire format as the package
// documentation states it. The differential tests and fuzz targets hold
// Marshal, AppendJSON, Decode and both decoder paths to it.

// refKnown lists the wire names of Event's fields.
var refKnown = []string{"event_id", "type", "key", "version", "base_version", "artifact_ref", "checksum", "control_version", "created_at"}

// refWire is Event's known members as plain struct fields: what json.Marshal
// writes for them. CreatedAt is the created_at literal.
type refWire struct {
	EventID        string          `json:"event_id"`
	Type           string          `json:"type"`
	Key            string          `json:"key,omitempty"`
	Version        int64           `json:"version,omitempty"`
	BaseVersion    int64           `json:"base_version,omitempty"`
	ArtifactRef    string          `json:"artifact_ref,omitempty"`
	Checksum       string          `json:"checksum,omitempty"`
	ControlVersion uint64          `json:"control_version"`
	CreatedAt      json.RawMessage `json:"created_at"`
}

// refMembers walks the JSON object b with json.Decoder and returns its
// members by decoded name, values as written. It fails on invalid JSON,
// trailing data, a non-object, and a name that appears twice.
func refMembers(b []byte) (map[string]json.RawMessage, []string, error) {
	if !json.Valid(b) {
		return nil, nil, errors.New("invalid JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, err
	}
	if tok != json.Delim('{') {
		return nil, nil, fmt.Errorf("not an object: %v", tok)
	}
	m := map[string]json.RawMessage{}
	var order []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		name := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, err
		}
		if _, dup := m[name]; dup {
			return nil, nil, fmt.Errorf("duplicate %q", name)
		}
		m[name] = v
		order = append(order, name)
	}
	return m, order, nil
}

// refFolds reports whether name is a known name written in another case.
func refFolds(name string) bool {
	for _, k := range refKnown {
		if name != k && strings.EqualFold(name, k) {
			return true
		}
	}
	return false
}

func refIsKnown(name string) bool {
	for _, k := range refKnown {
		if name == k {
			return true
		}
	}
	return false
}

func refHTMLEscape(b []byte) string {
	var buf bytes.Buffer
	json.HTMLEscape(&buf, b)
	return buf.String()
}

// refCanonicalExtra is the canonical text of the Extra x.
func refCanonicalExtra(x string) (string, error) {
	if x == "" {
		return "", nil
	}
	m, _, err := refMembers([]byte(x))
	if err != nil {
		return "", err
	}
	for name := range m {
		if refIsKnown(name) || refFolds(name) {
			return "", fmt.Errorf("known name %q", name)
		}
	}
	if len(m) == 0 {
		return "", nil
	}
	c, err := json.Marshal(m)
	return string(c), err
}

// refMarshal is the reference encoder.
func refMarshal(e controlevent.Event) ([]byte, error) {
	w := refWire{EventID: e.EventID, Type: e.Type, Key: e.Key, Version: e.Version, BaseVersion: e.BaseVersion,
		ArtifactRef: e.ArtifactRef, Checksum: e.Checksum, ControlVersion: e.ControlVersion}
	if raw := e.CreatedAtRaw; raw != "" {
		if !json.Valid([]byte(raw)) || raw[0] != '"' || raw[len(raw)-1] != '"' {
			return nil, errors.New("CreatedAtRaw is not a string literal")
		}
		w.CreatedAt = json.RawMessage(raw)
	} else {
		t, err := json.Marshal(e.CreatedAt)
		if err != nil {
			return nil, err
		}
		w.CreatedAt = t
	}
	b, err := json.Marshal(w)
	if err != nil {
		return nil, err
	}
	x, err := refCanonicalExtra(e.Extra)
	if err != nil {
		return nil, err
	}
	if x != "" {
		b = append(append(append(b[:len(b)-1], ','), x[1:len(x)-1]...), '}')
	}
	return b, nil
}

// refDecode is the reference decoder.
func refDecode(b []byte) (controlevent.Event, error) {
	var e controlevent.Event
	if len(b) > controlevent.MaxEncodedSize {
		return e, errors.New("too big")
	}
	m, order, err := refMembers(b)
	if err != nil {
		return e, err
	}
	extra := map[string]json.RawMessage{}
	for _, name := range order {
		v := m[name]
		var err error
		switch name {
		case "event_id":
			err = json.Unmarshal(v, &e.EventID)
		case "type":
			err = json.Unmarshal(v, &e.Type)
		case "key":
			err = json.Unmarshal(v, &e.Key)
		case "version":
			err = json.Unmarshal(v, &e.Version)
		case "base_version":
			err = json.Unmarshal(v, &e.BaseVersion)
		case "artifact_ref":
			err = json.Unmarshal(v, &e.ArtifactRef)
		case "checksum":
			err = json.Unmarshal(v, &e.Checksum)
		case "control_version":
			err = json.Unmarshal(v, &e.ControlVersion)
		case "created_at":
			var s *string
			if err = json.Unmarshal(v, &s); err != nil || s == nil {
				break
			}
			var t time.Time
			parsed := t.UnmarshalText([]byte(*s)) == nil
			if parsed {
				e.CreatedAt = t
			}
			if want, merr := t.MarshalJSON(); !parsed || merr != nil || !bytes.Equal(want, v) {
				e.CreatedAtRaw = refHTMLEscape(v)
			}
		default:
			if refFolds(name) {
				return controlevent.Event{}, fmt.Errorf("case variant %q", name)
			}
			extra[name] = v
		}
		if err != nil {
			return controlevent.Event{}, err
		}
	}
	if len(extra) > 0 {
		x, err := json.Marshal(extra)
		if err != nil {
			return controlevent.Event{}, err
		}
		e.Extra = string(x)
	}
	return e, nil
}

// checkMarshal fails unless Marshal, AppendJSON and json.Marshal (through
// Event's MarshalJSON) agree byte for byte with the reference encoder, and
// fail exactly when it fails, with errors wrapping ErrInvalid.
func checkMarshal(t *testing.T, e controlevent.Event) {
	t.Helper()
	want, wantErr := refMarshal(e)
	got, err := controlevent.Marshal(e)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("Marshal(%#v) error %v; reference error %v", e, err, wantErr)
	}
	viaJSON, jsonErr := json.Marshal(e)
	if (jsonErr != nil) != (err != nil) {
		t.Fatalf("json.Marshal error %v, Marshal error %v", jsonErr, err)
	}
	if err != nil {
		if !errors.Is(err, controlevent.ErrInvalid) || !strings.HasPrefix(err.Error(), "controlevent: encode event ") {
			t.Fatalf("Marshal error %q: want prefix \"controlevent: encode event \" wrapping ErrInvalid", err)
		}
		if got != nil {
			t.Fatalf("Marshal returned %q with an error", got)
		}
	} else if !bytes.Equal(got, want) || !bytes.Equal(got, viaJSON) {
		t.Fatalf("Marshal(%#v)\n got %s\nwant %s\njson %s", e, got, want, viaJSON)
	}
	prefix := []byte("prefix:")
	app, appErr := controlevent.AppendJSON(prefix[:len(prefix):len(prefix)], e)
	if (appErr != nil) != (err != nil) {
		t.Fatalf("AppendJSON error %v, Marshal error %v", appErr, err)
	}
	if !bytes.Equal(app, append(append([]byte(nil), prefix...), got...)) {
		t.Fatalf("AppendJSON = %q, want prefix then %q", app, got)
	}
	// A roomy dst exercises the path where nothing is reallocated.
	roomy := append(make([]byte, 0, 4096), prefix...)
	app, _ = controlevent.AppendJSON(roomy, e)
	if !bytes.Equal(app, append(append([]byte(nil), prefix...), got...)) {
		t.Fatalf("AppendJSON(roomy) = %q, want prefix then %q", app, got)
	}
}

// checkDecode fails unless Decode, both of its paths and json.Unmarshal
// (through Event's UnmarshalJSON) agree with the reference decoder on b:
// the same Event, or all an error (wrapping ErrInvalid, with the zero
// Event). A decoded event encodes without error to an equivalent object
// that decodes to the same Event. It reports whether the fast path
// accepted b.
func checkDecode(t *testing.T, b []byte) bool {
	t.Helper()
	want, wantErr := refDecode(b)
	got, err := controlevent.Decode(b)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("Decode(%q): error %v; reference error %v", b, err, wantErr)
	}
	slow, slowErr := controlevent.DecodeSlow(b)
	if (slowErr != nil) != (wantErr != nil) {
		t.Fatalf("decodeSlow(%q): error %v; reference error %v", b, slowErr, wantErr)
	}
	fast, ok := controlevent.DecodeFast(b)
	if ok && wantErr != nil {
		t.Fatalf("fast path accepted %q, which the reference rejects: %v", b, wantErr)
	}
	var viaJSON controlevent.Event
	jsonErr := json.Unmarshal(b, &viaJSON)
	if err != nil {
		for _, e := range []error{err, slowErr} {
			if !errors.Is(e, controlevent.ErrInvalid) || !strings.HasPrefix(e.Error(), "controlevent: decode") {
				t.Fatalf("Decode(%q) error %q: want prefix \"controlevent: decode\" wrapping ErrInvalid", b, e)
			}
		}
		if got != (controlevent.Event{}) || slow != (controlevent.Event{}) {
			t.Fatalf("Decode(%q) returned %+v / %+v with an error, want the zero Event", b, got, slow)
		}
		if jsonErr == nil && string(bytes.TrimSpace(b)) != "null" {
			t.Fatalf("json.Unmarshal(%q) into an Event succeeded; Decode: %v", b, err)
		}
		return false
	}
	if jsonErr != nil {
		t.Fatalf("json.Unmarshal(%q) into an Event: %v", b, jsonErr)
	}
	for name, e := range map[string]controlevent.Event{"Decode": got, "decodeSlow": slow, "json.Unmarshal": viaJSON} {
		if !sameEvent(e, want) {
			t.Fatalf("%s(%q)\n got %#v\nwant %#v", name, b, e, want)
		}
	}
	if ok && !sameEvent(fast, want) {
		t.Fatalf("fast path on %q\n got %#v\nwant %#v", b, fast, want)
	}
	enc, err := controlevent.Marshal(got)
	if err != nil {
		t.Fatalf("Marshal of the event decoded from %q: %v", b, err)
	}
	again, err := controlevent.Decode(enc)
	if err != nil || !sameEvent(again, got) {
		t.Fatalf("Decode(Marshal(Decode(%q))) = %#v, %v; want %#v", b, again, err, got)
	}
	return ok
}

// codecEvents are events whose encodings are tricky in some way.
func codecEvents() []controlevent.Event {
	base := valid()
	with := func(f func(*controlevent.Event)) controlevent.Event {
		e := base
		f(&e)
		return e
	}
	return []controlevent.Event{
		{},
		base,
		with(func(e *controlevent.Event) { e.CreatedAt = time.Now() }), // monotonic reading, local zone
		with(func(e *controlevent.Event) { e.CreatedAt = time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC) }),
		with(func(e *controlevent.Event) { e.CreatedAt = time.Date(2026, 1, 2, 3, 4, 5, 120000000, time.UTC) }),
		with(func(e *controlevent.Event) {
			e.CreatedAt = time.Date(2026, 1, 2, 3, 4, 5, 1, time.FixedZone("X", -(9*3600+30*60)))
		}),
		with(func(e *controlevent.Event) {
			e.CreatedAt = time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", 23*3600+59*60))
		}),
		with(func(e *controlevent.Event) {
			e.CreatedAt = time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", 24*3600))
		}), // error
		with(func(e *controlevent.Event) {
			e.CreatedAt = time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", 3600+30))
		}), // offset seconds dropped
		with(func(e *controlevent.Event) {
			e.CreatedAt = time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", -100*3600))
		}), // error
		with(func(e *controlevent.Event) { e.CreatedAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }),             // error
		with(func(e *controlevent.Event) { e.CreatedAt = time.Date(-1, 12, 31, 0, 0, 0, 0, time.UTC) }),              // error
		with(func(e *controlevent.Event) { e.CreatedAt = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC) }),                 // year 0000
		with(func(e *controlevent.Event) { e.CreatedAt = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC) }), // last
		with(func(e *controlevent.Event) {
			e.CreatedAt = time.Date(1, 1, 1, 0, 0, 0, 0, time.FixedZone("", 3600)).In(time.UTC)
		}),
		with(func(e *controlevent.Event) { e.CreatedAt = time.Unix(math.MaxInt64/2, 0) }), // error
		with(func(e *controlevent.Event) {
			e.Version, e.BaseVersion, e.ControlVersion = math.MaxInt64, math.MinInt64, math.MaxUint64
		}),
		with(func(e *controlevent.Event) { e.Version, e.BaseVersion, e.ControlVersion = -1, 1, 1 }),
		with(func(e *controlevent.Event) {
			e.EventID = "<script>&amp;\"\\/\b\f\n\r\t\x00\x01\x1f\x7f"
			e.Type = "caf\u00e9 \u2028\u2029 \U0001F600 \ufffd"
			e.Key = "bad \xff\xfe utf8 \xe2\x80 tail\xed\xa0\x80" // invalid bytes, surrogate
			e.ArtifactRef = strings.Repeat("a", 300)
			e.Checksum = "\u2027\u202a"
		}),
		with(func(e *controlevent.Event) {
			e.Key, e.ArtifactRef, e.Checksum, e.Version, e.BaseVersion = "", "", "", 0, 0
		}),
		// Lenient created_at, kept as written.
		with(func(e *controlevent.Event) { e.CreatedAt, e.CreatedAtRaw = time.Time{}, `""` }),
		with(func(e *controlevent.Event) { e.CreatedAtRaw = `"2026-11-27T10:00:00+00:00"` }),
		with(func(e *controlevent.Event) { e.CreatedAtRaw = `"27/11/2026 <10:00> & \u2028` + "\u2028" + `"` }), // escaped on output
		with(func(e *controlevent.Event) { e.CreatedAtRaw = `"a\"b\\c\u00e9"` }),
		with(func(e *controlevent.Event) { e.CreatedAtRaw = `"unterminated` }),   // error
		with(func(e *controlevent.Event) { e.CreatedAtRaw = `17` }),              // error
		with(func(e *controlevent.Event) { e.CreatedAtRaw = ` ""` }),             // error
		with(func(e *controlevent.Event) { e.CreatedAtRaw = `"a" "b"` }),         // error
		with(func(e *controlevent.Event) { e.CreatedAtRaw = "\"bad\xffutf8\"" }), // kept
		with(func(e *controlevent.Event) {
			e.CreatedAtRaw = `""`
			e.CreatedAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
		}), // raw wins
		// Extra members.
		with(func(e *controlevent.Event) { e.Extra = `{"id":7,"stack_id":"s1","tenant_id":"acme"}` }),
		with(func(e *controlevent.Event) { e.Extra = `{"tenant_id":"acme","id":7}` }),                 // unsorted
		with(func(e *controlevent.Event) { e.Extra = "{ \"b\" : [1, {\"y\": null}],\n \"a\": {} }" }), // whitespace
		with(func(e *controlevent.Event) { e.Extra = `{}` }),
		with(func(e *controlevent.Event) { e.Extra = `{"a<b":"x&y","\u0041":"\u003c","` + "\u2028" + `":1}` }),
		with(func(e *controlevent.Event) { e.Extra = `{"TenantID":1,"z":true,"y":false,"x":-1.5e3}` }),
		with(func(e *controlevent.Event) { e.Extra = `{"a":1,"a":2}` }),    // error: duplicate
		with(func(e *controlevent.Event) { e.Extra = `{"type":"x"}` }),     // error: known
		with(func(e *controlevent.Event) { e.Extra = `{"Type":"x"}` }),     // error: known up to case
		with(func(e *controlevent.Event) { e.Extra = "{\"\u212aey\":1}" }), // error: Kelvin sign folds to k
		with(func(e *controlevent.Event) { e.Extra = `[1]` }),              // error
		with(func(e *controlevent.Event) { e.Extra = `{"a":}` }),           // error
		with(func(e *controlevent.Event) { e.Extra = `{"a":1}x` }),         // error
		with(func(e *controlevent.Event) { e.Extra = `null` }),             // error
	}
}

func TestMarshal_MatchesEncodingJSON(t *testing.T) {
	for _, e := range codecEvents() {
		checkMarshal(t, e)
	}
	// Every single byte in every field.
	for c := 0; c < 256; c++ {
		s := "a" + string([]byte{byte(c)}) + "z"
		checkMarshal(t, controlevent.Event{EventID: s, Type: s, Key: s, ArtifactRef: s, Checksum: s})
	}
}

func TestDecode_MatchesReference(t *testing.T) {
	t.Run("CanonicalTakesFastPath", func(t *testing.T) {
		for _, e := range codecEvents() {
			b, err := controlevent.Marshal(e)
			if err != nil {
				continue
			}
			fast := checkDecode(t, b)
			// Only encodings without escapes stay
			// on the fast path; the tricky events are meant to fall back.
			plain := !bytes.Contains(b, []byte(`\`))
			if plain && !fast {
				t.Errorf("fast path rejected Marshal output %s", b)
			}
			if _, off := e.CreatedAt.Zone(); fast && off%60 == 0 && e.CreatedAtRaw == "" { // RFC 3339 drops offset seconds
				got, _ := controlevent.Decode(b)
				if !got.CreatedAt.Equal(e.CreatedAt) {
					t.Errorf("CreatedAt %v, want %v", got.CreatedAt, e.CreatedAt)
				}
				got.CreatedAt = e.CreatedAt
				want := e
				want.Extra, _ = refCanonicalExtra(e.Extra)
				if got != want {
					t.Errorf("Decode(Marshal(e)) = %#v, want %#v", got, want)
				}
			}
		}
	})
	const ts = `"2026-11-27T10:00:00Z"`
	cases := map[string]struct {
		in   string
		fast bool // whether the fast path must take it
	}{
		"Minimal":              {`{"event_id":"e","type":"t","control_version":1}`, true},
		"Empty":                {`{}`, true},
		"EmptyWithSpace":       {" { } ", true},
		"AnyOrder":             {`{"created_at":` + ts + `,"control_version":9,"type":"t","event_id":"e"}`, true},
		"Whitespace":           {" \t\r\n{ \"event_id\" : \"e\" ,\n\"version\" :\t-5 }\n", true},
		"TrailingNewline":      {`{"event_id":"e"}` + "\n", true},
		"NegZero":              {`{"version":-0}`, true},
		"MinInt64":             {`{"version":-9223372036854775808}`, true},
		"MaxInt64":             {`{"base_version":9223372036854775807}`, true},
		"MaxUint64":            {`{"control_version":18446744073709551615}`, true},
		"Unicode":              {`{"key":"café ☃ 😀 ` + "\u2028" + `"}`, true},
		"EmptyStrings":         {`{"event_id":"","type":"","key":""}`, true},
		"OffsetTime":           {`{"created_at":"2026-11-27T10:00:00+05:30"}`, true},
		"NegOffsetTime":        {`{"created_at":"2026-11-27T10:00:00.5-00:00"}`, true},
		"NanoTime":             {`{"created_at":"2026-11-27T10:00:00.123456789Z"}`, true},
		"LowerZ":               {`{"created_at":"2026-11-27t10:00:00z"}`, true},
		"Int64Overflow":        {`{"version":9223372036854775808}`, false},
		"Int64Underflow":       {`{"version":-9223372036854775809}`, false},
		"Uint64Overflow":       {`{"control_version":18446744073709551616}`, false},
		"Uint64Huge":           {`{"control_version":99999999999999999999999}`, false},
		"NegUint":              {`{"control_version":-1}`, false},
		"NegZeroUint":          {`{"control_version":-0}`, false},
		"Float":                {`{"version":1.0}`, false},
		"Exponent":             {`{"version":1e3}`, false},
		"ExponentCap":          {`{"control_version":1E3}`, false},
		"LeadingZero":          {`{"version":01}`, false},
		"PlusSign":             {`{"version":+1}`, false},
		"LoneMinus":            {`{"version":-}`, false},
		"NumberAsString":       {`{"version":"1"}`, false},
		"StringAsNumber":       {`{"event_id":1}`, false},
		"NullString":           {`{"event_id":null,"type":"t"}`, false},
		"NullNumber":           {`{"version":null}`, false},
		"NullTime":             {`{"created_at":null}`, false},
		"Null":                 {`null`, false},
		"NullSpaced":           {" null\n", false},
		"True":                 {`true`, false},
		"Bool":                 {`{"key":true}`, false},
		"Escape":               {`{"event_id":"a\"b"}`, false},
		"EscapeUnicode":        {`{"event_id":"\u0041"}`, false},
		"EscapedKey":           {`{"event\u005fid":"e"}`, false},
		"UpperKey":             {`{"EVENT_ID":"e"}`, false},
		"MixedCaseKey":         {`{"Event_Id":"e","Type":"t"}`, false},
		"KelvinKey":            {"{\"\u212aey\":\"k\"}", false},
		"LongS":                {"{\"checkſum\":\"k\"}", false},
		"Duplicate":            {`{"event_id":"a","event_id":"b"}`, false},
		"DuplicateCaseVariant": {`{"event_id":"a","EVENT_ID":"b"}`, false},
		"DuplicateEscaped":     {`{"event_id":"a","event\u005fid":"b"}`, false},
		"DuplicateUnknown":     {`{"x":1,"y":2,"x":1}`, false},
		"DuplicateUnknownEsc":  {`{"x":1,"\u0078":1}`, false},
		"DuplicateBadUTF8":     {"{\"\xff\":1,\"\xfe\":2}", false}, // both decode to U+FFFD
		"Unknown":              {`{"event_id":"e","future":{"x":[1,"}"]}}`, true},
		"UnknownScalars":       {`{"id":7,"tenant_id":"acme","stack_id":null,"ok":true,"no":false,"f":-1.5e-3,"s":"a\"\u00e9"}`, true},
		"UnknownIndented":      {"{\n  \"id\": 7,\n  \"event_id\": \"e\",\n  \"tenant_id\": \"acme\"\n}\n", true},
		"UnknownNestedSpace":   {`{"x":{"a": [1, 2]}}`, false},
		"UnknownEmptyNested":   {`{"x":{},"y":[],"z":[{}]}`, true},
		"UnknownHTML":          {`{"x":"<&>"}`, false},
		"UnknownLS":            {"{\"x\":\"\u2028\"}", false},
		"UnknownUpper":         {`{"tenantID":"t","StackID":1}`, true},
		"UnknownNonASCII":      {`{"é":1,"ü":2}`, true},
		"UnknownNameBadUTF8":   {"{\"\xff\":1}", false},
		"UnknownNameLS":        {"{\"a\u2028\":1}", false},
		"UnknownNameDEL":       {"{\"a\x7f\":1}", true},
		"UnknownBadUTF8":       {"{\"x\":\"\xff\"}", true},
		"UnknownEscapedName":   {`{"\u0078":1}`, false},
		"UnknownHTMLName":      {`{"a<b":1}`, false},
		"UnknownBadNumber":     {`{"x":01}`, false},
		"UnknownBadLiteral":    {`{"x":nul}`, false},
		"UnknownLiteralTail":   {`{"x":nullx}`, false},
		"UnknownTrailingComma": {`{"x":[1,]}`, false},
		"UnknownColonInArray":  {`{"x":[1:2]}`, false},
		"UnknownBadEscape":     {`{"x":"\q"}`, false},
		"UnknownShortUnicode":  {`{"x":"\u12"}`, false},
		"UnknownDeep":          {`{"x":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`, false},
		"UnknownTooDeep":       {`{"x":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`, false},
		"InvalidUTF8":          {"{\"key\":\"\xff\"}", false},
		"Surrogate":            {"{\"key\":\"\xed\xa0\x80\"}", false},
		"ControlChar":          {"{\"key\":\"a\x01b\"}", false},
		"RawNewline":           {"{\"key\":\"a\nb\"}", false},
		"DEL":                  {"{\"key\":\"a\x7fb\"}", true},
		"TimeEmpty":            {`{"created_at":""}`, true},
		"TimeOtherLayout":      {`{"created_at":"2026-11-27 10:00:00"}`, true},
		"TimeWords":            {`{"created_at":"yesterday, around noon"}`, true},
		"TimeZeroOffset":       {`{"created_at":"2026-11-27T10:00:00+00:00"}`, true},
		"TimeTrailingZeros":    {`{"created_at":"2026-11-27T10:00:00.500Z"}`, true},
		"TimeTenDigits":        {`{"created_at":"2026-11-27T10:00:00.1234567891Z"}`, true},
		"TimeOneDigitHour":     {`{"created_at":"2026-11-27T1:00:00Z"}`, true},
		"TimeDot":              {`{"created_at":"2026-11-27T10:00:00.Z"}`, true},
		"TimeEscape":           {`{"created_at":"2026-11-27T10:00:00\u005a"}`, false},
		"TimeHTML":             {`{"created_at":"<now>"}`, false},
		"TimeNotString":        {`{"created_at":17}`, false},
		"TimeObject":           {`{"created_at":{}}`, false},
		"TimeBadYear":          {`{"created_at":"10000-01-01T00:00:00Z"}`, true},
		"TimeOffset24":         {`{"created_at":"2026-11-27T10:00:00+24:00"}`, true},
		"TimeOffsetMinute60":   {`{"created_at":"2026-11-27T10:00:00+05:60"}`, true},
		"TimeNoZone":           {`{"created_at":"2026-11-27T10:00:00"}`, true},
		"TimeSpaces":           {`{"created_at":" 2026-11-27T10:00:00Z"}`, true},
		"TimeCommaFraction":    {`{"created_at":"2026-11-27T10:00:00,5Z"}`, true},
		"TimeLeap":             {`{"created_at":"2026-12-31T23:59:60Z"}`, true},
		"TimeUnicode":          {`{"created_at":"2026-11-27T10:00:00Zé"}`, true},
		"TimeBadUTF8":          {"{\"created_at\":\"\xff\"}", true},
		"TimeControl":          {"{\"created_at\":\"\x01\"}", false},
		"TimeDuplicate":        {`{"created_at":"","created_at":""}`, false},
		"TrailingComma":        {`{"event_id":"e",}`, false},
		"MissingColon":         {`{"event_id" "e"}`, false},
		"MissingComma":         {`{"event_id":"e" "type":"t"}`, false},
		"Unterminated":         {`{"event_id":"e`, false},
		"UnterminatedKey":      {`{"event_id`, false},
		"NoClose":              {`{"event_id":"e"`, false},
		"Trailing":             {`{"event_id":"e"}{}`, false},
		"TrailingGarbage":      {`{"event_id":"e"} x`, false},
		"TrailingNBSP":         {"{\"event_id\":\"e\"}\u00a0", false},
		"TrailingLS":           {"{\"event_id\":\"e\"}\u2028", false},
		"TrailingNEL":          {"{\"event_id\":\"e\"}\u0085", false},
		"TrailingVT":           {"{\"event_id\":\"e\"}\v", false},
		"TrailingFF":           {"{\"event_id\":\"e\"}\f", false},
		"TrailingNUL":          {"{\"event_id\":\"e\"}\x00", false},
		"LeadingBOM":           {"\ufeff{}", false},
		"LeadingNBSP":          {"\u00a0{}", false},
		"Array":                {`[1]`, false},
		"String":               {`"event"`, false},
		"Number":               {`42`, false},
		"Empty input":          {``, false},
		"Spaces only":          {"  ", false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			fast := checkDecode(t, []byte(c.in))
			if c.fast && !fast {
				t.Errorf("fast path rejected %q", c.in)
			}
			if !c.fast && fast {
				t.Errorf("fast path took %q; it should defer to the slow path", c.in)
			}
		})
	}
}

// FuzzMarshalMatchesJSON: Marshal, AppendJSON and json.Marshal write
// exactly the bytes of the reference encoder (or fail exactly when it
// fails), and Decode of that encoding agrees with the reference decoder.
func FuzzMarshalMatchesJSON(f *testing.F) {
	for _, e := range codecEvents() {
		_, off := e.CreatedAt.Zone()
		f.Add(e.EventID, e.Type, e.Key, e.Version, e.BaseVersion, e.ArtifactRef, e.Checksum, e.ControlVersion,
			e.CreatedAt.Unix(), int64(e.CreatedAt.Nanosecond()), off, uint8(0), e.CreatedAtRaw, e.Extra)
	}
	f.Add("", "", "", int64(0), int64(0), "", "", uint64(0), int64(0), int64(0), 0, uint8(3), "", "")
	f.Add("e", "t", "k", int64(1), int64(0), "", "", uint64(1), time.Now().Unix(), int64(1), 0, uint8(2), `""`, `{"id":1}`)
	f.Fuzz(func(t *testing.T, id, typ, key string, ver, base int64, ref, sum string, cv uint64,
		sec, nsec int64, off int, zone uint8, raw, extra string) {
		var ts time.Time
		switch zone % 4 {
		case 0:
			ts = time.Unix(sec, nsec).In(time.FixedZone("", off))
		case 1:
			ts = time.Unix(sec, nsec).UTC()
		case 2:
			ts = time.Unix(sec, nsec) // Local
		case 3: // zero Time
		}
		e := controlevent.Event{EventID: id, Type: typ, Key: key, Version: ver, BaseVersion: base,
			ArtifactRef: ref, Checksum: sum, ControlVersion: cv, CreatedAt: ts, CreatedAtRaw: raw, Extra: extra}
		checkMarshal(t, e)
		if b, err := controlevent.Marshal(e); err == nil {
			checkDecode(t, b)
		}
	})
}

// FuzzDecodeMatchesJSON: on any input, Decode, its two paths and
// json.Unmarshal return what the reference decoder built on encoding/json
// returns (an equal Event, or an error), and what they decode survives
// Marshal and Decode unchanged. The seeds (and testdata/fuzz) cover unknown
// members, created_at forms, duplicate and case-variant names, and what
// follows the object.
func FuzzDecodeMatchesJSON(f *testing.F) {
	for _, e := range codecEvents() {
		if b, err := controlevent.Marshal(e); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{
		`{}`, `null`, ` {"event_id":"e","type":"t","control_version":1} `,
		`{"version":-9223372036854775808,"base_version":9223372036854775807,"control_version":18446744073709551615}`,
		`{"control_version":18446744073709551616}`, `{"version":1e2}`, `{"version":-0}`,
		`{"created_at":"2026-11-27T10:00:00.999999999+23:59"}`, `{"created_at":"2026-11-27T10:00:00Z"}`,
		`{"event_id":"a","event_id":"b"}`, `{"EVENT_ID":"a"}`, `{"event_id":"\u00e9\ud83d\ude00"}`,
		"{\"key\":\"\xff\"}", `{"x":[{"y":null}],"event_id":"e"}`, `{"key":"<&>"}`,
		`{"created_at":""}`, `{"created_at":"2026-11-27 10:00"}`, `{"created_at":"2026-11-27T10:00:00+00:00"}`,
		`{"created_at":"2026-11-27T10:00:00.100Z"}`, `{"created_at":null}`, `{"created_at":"\u0032026-11-27T10:00:00Z"}`,
		`{"id":7,"tenant_id":"acme","stack_id":"s"}`, `{"x":{"a": [1, {"b" : "<"}]}, "y":1.5e10}`,
		`{"x":1,"x":2}`, `{"Type":"t"}`, "{\"\u212aey\":1}", `{"a":1}` + "\u00a0", `{"a":1}` + "\u2028",
		"{\n  \"event_id\": \"e\",\n  \"id\": 1,\n  \"created_at\": \"\"\n}\n", `[]`, `"s"`, `0`, `true`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecode(t, b)
	})
}
