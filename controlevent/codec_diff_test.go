package controlevent_test

import (
	"bytes"
	"encoding/json"
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

// checkMarshal fails unless Marshal and AppendJSON agree byte for byte (and
// in error-ness and message) with json.Marshal.
func checkMarshal(t *testing.T, e controlevent.Event) {
	t.Helper()
	want, wantErr := json.Marshal(e)
	got, err := controlevent.Marshal(e)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("Marshal(%#v) error %v; json.Marshal error %v", e, err, wantErr)
	}
	ref, refErr := controlevent.MarshalJSON(e)
	if err != nil {
		if err.Error() != refErr.Error() {
			t.Fatalf("Marshal error %q, want %q", err, refErr)
		}
		if got != nil {
			t.Fatalf("Marshal returned %q with an error", got)
		}
	} else if !bytes.Equal(got, want) || !bytes.Equal(got, ref) {
		t.Fatalf("Marshal(%#v)\n got %s\nwant %s", e, got, want)
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

// checkDecode fails unless Decode agrees with the encoding/json decoder on
// b (same Event, same error text), and the fast path, when it accepts b,
// returns that same Event. It reports whether the fast path accepted b.
func checkDecode(t *testing.T, b []byte) bool {
	t.Helper()
	want, wantErr := controlevent.DecodeJSON(b)
	got, err := controlevent.Decode(b)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("Decode(%q): error %v; encoding/json error %v", b, err, wantErr)
	}
	if err != nil && err.Error() != wantErr.Error() {
		t.Fatalf("Decode(%q): error %q; encoding/json error %q", b, err, wantErr)
	}
	// Decode accepts nothing json.Unmarshal rejects, and not null either.
	var plain map[string]any
	if uerr := json.Unmarshal(b, &plain); err == nil && (uerr != nil || plain == nil) {
		t.Fatalf("Decode(%q) accepted what json.Unmarshal into a map rejects or reads as null: %v", b, uerr)
	}
	if !sameEvent(got, want) {
		t.Fatalf("Decode(%q)\n got %#v\nwant %#v", b, got, want)
	}
	fast, ok := controlevent.DecodeFast(b)
	if ok {
		if wantErr != nil {
			t.Fatalf("fast path accepted %q, which encoding/json rejects: %v", b, wantErr)
		}
		if !sameEvent(fast, want) {
			t.Fatalf("fast path on %q\n got %#v\nwant %#v", b, fast, want)
		}
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

func TestDecode_MatchesEncodingJSON(t *testing.T) {
	t.Run("CanonicalTakesFastPath", func(t *testing.T) {
		for _, e := range codecEvents() {
			b, err := controlevent.Marshal(e)
			if err != nil {
				continue
			}
			fast := checkDecode(t, b)
			// Only plain strings (no escapes, all valid UTF-8) stay on the
			// fast path; the tricky-strings event is meant to fall back.
			plain := !bytes.Contains(b, []byte(`\`))
			if plain && !fast {
				t.Errorf("fast path rejected Marshal output %s", b)
			}
			if _, off := e.CreatedAt.Zone(); fast && off%60 == 0 { // RFC 3339 drops offset seconds
				got, _ := controlevent.Decode(b)
				if !got.CreatedAt.Equal(e.CreatedAt) {
					t.Errorf("CreatedAt %v, want %v", got.CreatedAt, e.CreatedAt)
				}
				got.CreatedAt = e.CreatedAt
				if got != e {
					t.Errorf("Decode(Marshal(e)) = %#v, want %#v", got, e)
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
		"LowerZ":               {`{"created_at":"2026-11-27t10:00:00z"}`, false},
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
		"Bool":                 {`{"key":true}`, false},
		"Escape":               {`{"event_id":"a\"b"}`, false},
		"EscapeUnicode":        {`{"event_id":"\u0041"}`, false},
		"EscapedKey":           {`{"event\u005fid":"e"}`, false},
		"UpperKey":             {`{"EVENT_ID":"e"}`, false},
		"MixedCaseKey":         {`{"Event_Id":"e","Type":"t"}`, false},
		"KelvinKey":            {"{\"\u212aey\":\"k\"}", false},
		"Duplicate":            {`{"event_id":"a","event_id":"b"}`, false},
		"DuplicateCaseVariant": {`{"event_id":"a","EVENT_ID":"b"}`, false},
		"Unknown":              {`{"event_id":"e","future":{"x":[1,"}"]}}`, false},
		"InvalidUTF8":          {"{\"key\":\"\xff\"}", false},
		"Surrogate":            {"{\"key\":\"\xed\xa0\x80\"}", false},
		"ControlChar":          {"{\"key\":\"a\x01b\"}", false},
		"RawNewline":           {"{\"key\":\"a\nb\"}", false},
		"DEL":                  {"{\"key\":\"a\x7fb\"}", true},
		"TimeEscape":           {`{"created_at":"2026-11-27T10:00:00\u005a"}`, false},
		"TimeNotString":        {`{"created_at":17}`, false},
		"TimeBadYear":          {`{"created_at":"10000-01-01T00:00:00Z"}`, false},
		"TimeOffset24":         {`{"created_at":"2026-11-27T10:00:00+24:00"}`, true}, // time.Time.UnmarshalJSON accepts it
		"TimeNoZone":           {`{"created_at":"2026-11-27T10:00:00"}`, false},
		"TimeSpaces":           {`{"created_at":" 2026-11-27T10:00:00Z"}`, false},
		"TimeCommaFraction":    {`{"created_at":"2026-11-27T10:00:00,5Z"}`, true}, // so does time.Time.UnmarshalJSON
		"TimeLeap":             {`{"created_at":"2026-12-31T23:59:60Z"}`, false},
		"TimeUnicode":          {`{"created_at":"2026-11-27T10:00:00Zé"}`, false},
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
		"NullSpaced":           {" null\n", false},
		"True":                 {`true`, false},
		"String":               {`"event"`, false},
		"LeadingBOM":           {"\ufeff{}", false},
		"Array":                {`[1]`, false},
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
				t.Errorf("fast path took %q; it should defer to encoding/json", c.in)
			}
		})
	}
}

// FuzzMarshalMatchesJSON: Marshal and AppendJSON write exactly the bytes
// json.Marshal writes (or fail exactly when it fails), and Decode of that
// encoding agrees with encoding/json's decoder.
func FuzzMarshalMatchesJSON(f *testing.F) {
	for _, e := range codecEvents() {
		_, off := e.CreatedAt.Zone()
		f.Add(e.EventID, e.Type, e.Key, e.Version, e.BaseVersion, e.ArtifactRef, e.Checksum, e.ControlVersion,
			e.CreatedAt.Unix(), int64(e.CreatedAt.Nanosecond()), off, uint8(0))
	}
	f.Add("", "", "", int64(0), int64(0), "", "", uint64(0), int64(0), int64(0), 0, uint8(3))
	f.Add("e", "t", "k", int64(1), int64(0), "", "", uint64(1), time.Now().Unix(), int64(1), 0, uint8(2))
	f.Fuzz(func(t *testing.T, id, typ, key string, ver, base int64, ref, sum string, cv uint64,
		sec, nsec int64, off int, zone uint8) {
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
			ArtifactRef: ref, Checksum: sum, ControlVersion: cv, CreatedAt: ts}
		checkMarshal(t, e)
		if b, err := controlevent.Marshal(e); err == nil {
			checkDecode(t, b)
		}
	})
}

// FuzzDecodeMatchesJSON: on any input, Decode returns what the encoding/json
// decoder returns (Event and error text), and the fast path never accepts an
// input with a different result.
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
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecode(t, b)
	})
}
