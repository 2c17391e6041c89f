package controlevent_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
)

func TestDecode(t *testing.T) {
	good, err := controlevent.Marshal(valid())
	if err != nil {
		t.Fatal(err)
	}
	t.Run("RoundTrip", func(t *testing.T) {
		e, err := controlevent.Decode(good)
		if err != nil {
			t.Fatal(err)
		}
		if !e.CreatedAt.Equal(valid().CreatedAt) {
			t.Fatalf("CreatedAt %v", e.CreatedAt)
		}
		e.CreatedAt = valid().CreatedAt
		if e != valid() {
			t.Fatalf("Decode(Marshal(e)) = %+v, want %+v", e, valid())
		}
	})
	t.Run("SnakeCaseFields", func(t *testing.T) {
		for _, f := range []string{`"event_id"`, `"type"`, `"key"`, `"version"`, `"base_version"`, `"artifact_ref"`, `"checksum"`, `"control_version"`, `"created_at"`} {
			if !strings.Contains(string(good), f) {
				t.Errorf("encoding %s lacks field %s", good, f)
			}
		}
	})
	t.Run("OKWhitespaceAndUnknownFields", func(t *testing.T) {
		e, err := controlevent.Decode([]byte("\n {\"event_id\":\"e\",\"type\":\"t\",\"control_version\":3,\"future\":{\"x\": [1]}} \n\t"))
		if err != nil || e.EventID != "e" || e.ControlVersion != 3 || e.Extra != `{"future":{"x":[1]}}` {
			t.Fatalf("Decode = %+v, %v", e, err)
		}
	})
	bad := map[string]string{
		"ErrTrailingData":    string(good) + `{}`,
		"ErrTrailingGarbage": string(good) + ` x`,
		"ErrTooBig":          `{"event_id":"e","type":"t","key":"` + strings.Repeat("k", controlevent.MaxEncodedSize) + `"}`,
		"ErrNotObjectArray":  `[1,2]`,
		"ErrNotObjectString": `"event"`,
		"ErrNotObjectNumber": `42`,
		"ErrEmpty":           ``,
		"ErrTruncated":       `{"event_id":"e"`,
		"ErrWrongType":       `{"control_version":"one"}`,
		"ErrNegativeCV":      `{"control_version":-1}`,
		// What encoding/json rejects, and Decode used to accept.
		"ErrNull":             `null`,
		"ErrNullSpaced":       " null \n",
		"ErrTrailingNBSP":     string(good) + "\u00a0",
		"ErrTrailingLS":       string(good) + "\u2028",
		"ErrTrailingPS":       string(good) + "\n\u2029",
		"ErrTrailingNEL":      string(good) + "\u0085",
		"ErrTrailingIdeoSp":   string(good) + "\u3000",
		"ErrTrailingVT":       string(good) + "\v",
		"ErrTrailingFF":       string(good) + "\f",
		"ErrNotObjectBool":    `true`,
		"ErrCreatedAtNumber":  `{"event_id":"e","created_at":1764237600}`,
		"ErrDuplicate":        `{"event_id":"e","type":"t","type":"u"}`,
		"ErrDuplicateUnknown": `{"event_id":"e","tenant_id":"a","tenant_id":"b"}`,
		"ErrCaseVariant":      `{"event_id":"e","Type":"t"}`,
	}
	for name, in := range bad {
		t.Run(name, func(t *testing.T) {
			e, err := controlevent.Decode([]byte(in))
			if err == nil {
				t.Fatalf("Decode accepted %.80q as %+v", in, e)
			}
			if !errors.Is(err, controlevent.ErrInvalid) || !strings.HasPrefix(err.Error(), "controlevent: decode") {
				t.Fatalf("Decode error %q: want prefix \"controlevent: decode\" wrapping ErrInvalid", err)
			}
			if e != (controlevent.Event{}) {
				t.Fatalf("Decode returned %+v with an error, want the zero Event", e)
			}
		})
	}
	t.Run("UnmarshalJSONNullIsNoOp", func(t *testing.T) {
		// The json.Unmarshaler convention; Decode itself rejects null.
		e := valid()
		if err := json.Unmarshal([]byte(`null`), &e); err != nil || !sameEvent(e, valid()) {
			t.Fatalf("json.Unmarshal(null) = %v, event %+v", err, e)
		}
	})
}

func TestDecode_LenientCreatedAt(t *testing.T) {
	at := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		literal string
		raw     bool      // kept in CreatedAtRaw
		want    time.Time // CreatedAt
		text    string    // CreatedAtText
	}{
		{"Canonical", `"2026-11-27T10:00:00Z"`, false, at, "2026-11-27T10:00:00Z"},
		{"CanonicalNano", `"2026-11-27T10:00:00.123456789Z"`, false, at.Add(123456789), "2026-11-27T10:00:00.123456789Z"},
		{"CanonicalOffset", `"2026-11-27T15:30:00+05:30"`, false, at, "2026-11-27T15:30:00+05:30"},
		{"Empty", `""`, true, time.Time{}, ""},
		{"OtherLayout", `"2026-11-27 10:00:00"`, true, time.Time{}, "2026-11-27 10:00:00"},
		{"Words", `"last tuesday"`, true, time.Time{}, "last tuesday"},
		{"ZeroOffset", `"2026-11-27T10:00:00+00:00"`, true, at, "2026-11-27T10:00:00+00:00"},
		{"TrailingZeros", `"2026-11-27T10:00:00.500Z"`, true, at.Add(500 * time.Millisecond), "2026-11-27T10:00:00.500Z"},
		{"Escaped", `"2026-11-27T10:00:00\u005a"`, true, at, "2026-11-27T10:00:00Z"},
		{"Offset24", `"2026-11-27T10:00:00+24:00"`, true, at.Add(-24 * time.Hour), "2026-11-27T10:00:00+24:00"},
		{"HTML", `"<soon> & later"`, true, time.Time{}, "<soon> & later"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := `{"event_id":"e","type":"t","control_version":1,"created_at":` + tc.literal + `}`
			e, err := controlevent.Decode([]byte(in))
			if err != nil {
				t.Fatalf("Decode(%s): %v", in, err)
			}
			if err := e.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if !e.CreatedAt.Equal(tc.want) {
				t.Errorf("CreatedAt = %v, want %v", e.CreatedAt, tc.want)
			}
			if (e.CreatedAtRaw != "") != tc.raw {
				t.Errorf("CreatedAtRaw = %q, want it kept: %v", e.CreatedAtRaw, tc.raw)
			}
			if got := e.CreatedAtText(); got != tc.text {
				t.Errorf("CreatedAtText() = %q, want %q", got, tc.text)
			}
			// Written back as written (HTML characters escaped, as
			// encoding/json writes them, which is the same string).
			b, err := controlevent.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			lit := tc.literal
			if tc.name == "HTML" {
				lit = `"\u003csoon\u003e \u0026 later"`
			}
			if !bytes.Contains(b, []byte(`"created_at":`+lit)) {
				t.Errorf("Marshal = %s; want created_at %s as written", b, lit)
			}
			var plain struct {
				CreatedAt string `json:"created_at"`
			}
			if err := json.Unmarshal(b, &plain); err != nil || plain.CreatedAt != tc.text {
				t.Errorf("a plain reader sees created_at %q (%v), want %q", plain.CreatedAt, err, tc.text)
			}
		})
	}
	t.Run("ChangedCreatedAtNeedsRawCleared", func(t *testing.T) {
		e, _ := controlevent.Decode([]byte(`{"event_id":"e","type":"t","created_at":""}`))
		e.CreatedAt = at
		if b, _ := controlevent.Marshal(e); !bytes.Contains(b, []byte(`"created_at":""`)) {
			t.Errorf("with CreatedAtRaw set, Marshal = %s; want the raw created_at", b)
		}
		e.CreatedAtRaw = ""
		if b, _ := controlevent.Marshal(e); !bytes.Contains(b, []byte(`"created_at":"2026-11-27T10:00:00Z"`)) {
			t.Errorf("with CreatedAtRaw cleared, Marshal = %s; want CreatedAt", b)
		}
	})
	t.Run("MissingOrNullIsZero", func(t *testing.T) {
		for _, in := range []string{`{"event_id":"e"}`, `{"event_id":"e","created_at":null}`} {
			e, err := controlevent.Decode([]byte(in))
			if err != nil || !e.CreatedAt.IsZero() || e.CreatedAtRaw != "" {
				t.Errorf("Decode(%s) = %+v, %v; want zero CreatedAt, no CreatedAtRaw", in, e, err)
			}
		}
	})
}

func TestDecode_UnknownMembers(t *testing.T) {
	in := `{"stack_id":"s-1","event_id":"e","type":"t","tenant_id":"acme","control_version":5,` +
		`"id":42,"labels":{"tier": "gold", "zones": ["a", "b"]},"ratio":1.50,"none":null,"created_at":""}`
	e, err := controlevent.Decode([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	const wantExtra = `{"id":42,"labels":{"tier":"gold","zones":["a","b"]},"none":null,"ratio":1.50,"stack_id":"s-1","tenant_id":"acme"}`
	if e.Extra != wantExtra {
		t.Fatalf("Extra = %s\nwant    %s", e.Extra, wantExtra)
	}
	if err := e.Validate(); err != nil {
		t.Fatal(err)
	}
	t.Run("Accessors", func(t *testing.T) {
		if v, ok := e.ExtraField("tenant_id"); !ok || string(v) != `"acme"` {
			t.Errorf(`ExtraField("tenant_id") = %s, %v`, v, ok)
		}
		if v, ok := e.ExtraField("labels"); !ok || string(v) != `{"tier":"gold","zones":["a","b"]}` {
			t.Errorf(`ExtraField("labels") = %s, %v`, v, ok)
		}
		if v, ok := e.ExtraField("nope"); ok {
			t.Errorf(`ExtraField("nope") = %s, true`, v)
		}
		if v, ok := e.ExtraField("type"); ok {
			t.Errorf(`ExtraField("type") = %s, true; known members are not extra`, v)
		}
		m, err := e.ExtraFields()
		if err != nil || len(m) != 6 || string(m["id"]) != "42" || string(m["none"]) != "null" {
			t.Errorf("ExtraFields() = %v, %v", m, err)
		}
		if m, err := valid().ExtraFields(); m != nil || err != nil {
			t.Errorf("ExtraFields() of an event without extras = %v, %v", m, err)
		}
	})
	t.Run("RoundTripSameObject", func(t *testing.T) {
		b, err := controlevent.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		var before, after map[string]any
		if err := json.Unmarshal([]byte(in), &before); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &after); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(before, after) {
			t.Errorf("re-encoded object differs:\n in  %v\n out %v", before, after)
		}
		again, err := controlevent.Decode(b)
		if err != nil || again != e {
			t.Errorf("Decode(Marshal(e)) = %+v, %v; want %+v", again, err, e)
		}
	})
	t.Run("ChangeTheEncoding", func(t *testing.T) {
		// Events that differ only in an extra member encode (and so digest)
		// differently.
		other := e
		other.Extra = strings.Replace(e.Extra, "acme", "acne", 1)
		a, _ := controlevent.Marshal(e)
		b, _ := controlevent.Marshal(other)
		if bytes.Equal(a, b) {
			t.Error("two events differing in an extra member have the same encoding")
		}
	})
	t.Run("EncodeExtra", func(t *testing.T) {
		x, err := controlevent.EncodeExtra(map[string]any{"tenant_id": "acme", "id": 42, "raw": json.RawMessage(`[1, 2]`)})
		if err != nil || x != `{"id":42,"raw":[1,2],"tenant_id":"acme"}` {
			t.Fatalf("EncodeExtra = %s, %v", x, err)
		}
		if x, err := controlevent.EncodeExtra(nil); x != "" || err != nil {
			t.Errorf("EncodeExtra(nil) = %q, %v", x, err)
		}
		for _, name := range []string{"type", "Type", "CONTROL_VERSION", "\u212aey"} {
			if _, err := controlevent.EncodeExtra(map[string]any{name: 1}); !errors.Is(err, controlevent.ErrInvalid) {
				t.Errorf("EncodeExtra with member %q: %v, want ErrInvalid", name, err)
			}
		}
		big := strings.Repeat("x", controlevent.MaxExtraLen)
		if _, err := controlevent.EncodeExtra(map[string]any{"big": big}); !errors.Is(err, controlevent.ErrInvalid) {
			t.Errorf("EncodeExtra over MaxExtraLen: %v, want ErrInvalid", err)
		}
	})
	t.Run("NonCanonicalExtraIsWrittenCanonically", func(t *testing.T) {
		ev := valid()
		ev.Extra = "{ \"tenant_id\" : \"acme\",\n\"id\": 7 }"
		b, err := controlevent.Marshal(ev)
		if err != nil || !bytes.HasSuffix(b, []byte(`,"id":7,"tenant_id":"acme"}`)) {
			t.Fatalf("Marshal = %s, %v", b, err)
		}
	})
}
