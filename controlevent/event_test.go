package controlevent_test

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/google/uuid"
)

const goodSum = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func valid() controlevent.Event {
	return controlevent.Event{
		EventID:        "0190f7d2-0000-7000-8000-000000000001",
		Type:           "kv.put",
		Key:            "tenants/acme",
		Version:        4,
		BaseVersion:    3,
		ArtifactRef:    goodSum,
		Checksum:       goodSum,
		ControlVersion: 17,
		CreatedAt:      time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC),
	}
}

func TestEvent_Validate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*controlevent.Event)
		wantErr string // substring; "" = valid
	}{
		{"OK", func(*controlevent.Event) {}, ""},
		{"OKMinimal", func(e *controlevent.Event) { *e = controlevent.Event{EventID: "e", Type: "t", ControlVersion: 1} }, ""},
		{"OKChecksumWithoutRef", func(e *controlevent.Event) { e.ArtifactRef = "" }, ""},
		{"OKMaxLengths", func(e *controlevent.Event) {
			e.EventID = strings.Repeat("i", controlevent.MaxEventIDLen)
			e.Type = strings.Repeat("t", controlevent.MaxTypeLen)
			e.Key = strings.Repeat("k", controlevent.MaxKeyLen)
		}, ""},
		{"OKKeyWithNewline", func(e *controlevent.Event) { e.Key = "a\nb" }, ""},
		{"ErrEmptyID", func(e *controlevent.Event) { e.EventID = "" }, "event_id is empty"},
		{"ErrLongID", func(e *controlevent.Event) { e.EventID = strings.Repeat("i", controlevent.MaxEventIDLen+1) }, "event_id is 129 bytes"},
		{"ErrIDBadUTF8", func(e *controlevent.Event) { e.EventID = "a\xff" }, "event_id is not valid UTF-8"},
		{"ErrIDNUL", func(e *controlevent.Event) { e.EventID = "a\x00b" }, "event_id contains control character U+0000"},
		{"ErrIDDEL", func(e *controlevent.Event) { e.EventID = "a\x7f" }, "control character U+007F"},
		{"ErrEmptyType", func(e *controlevent.Event) { e.Type = "" }, "type is empty"},
		{"ErrLongType", func(e *controlevent.Event) { e.Type = strings.Repeat("t", controlevent.MaxTypeLen+1) }, "type is 129 bytes"},
		{"ErrTypeControl", func(e *controlevent.Event) { e.Type = "kv\tput" }, "type contains control character"},
		{"ErrTypeBadUTF8", func(e *controlevent.Event) { e.Type = "\xc3" }, "type is not valid UTF-8"},
		{"ErrLongKey", func(e *controlevent.Event) { e.Key = strings.Repeat("k", controlevent.MaxKeyLen+1) }, "key is 1025 bytes"},
		{"ErrKeyBadUTF8", func(e *controlevent.Event) { e.Key = "\xff" }, "key is not valid UTF-8"},
		{"ErrLongRef", func(e *controlevent.Event) { e.ArtifactRef = strings.Repeat("r", controlevent.MaxArtifactRefLen+1) }, "artifact_ref is 257 bytes"},
		{"ErrRefControl", func(e *controlevent.Event) { e.ArtifactRef = "sha256:\n" }, "artifact_ref contains control character"},
		{"ErrRefWithoutChecksum", func(e *controlevent.Event) { e.Checksum = "" }, "artifact_ref is set but checksum is empty"},
		{"ErrChecksumPrefix", func(e *controlevent.Event) { e.Checksum = "md5:" + goodSum[7:] }, "does not start with"},
		{"ErrChecksumLength", func(e *controlevent.Event) { e.Checksum = goodSum[:len(goodSum)-1] }, "has 63 hex digits"},
		{"ErrChecksumUppercase", func(e *controlevent.Event) { e.Checksum = strings.ToUpper(goodSum[:8]) + goodSum[8:] }, "does not start with"},
		{"ErrChecksumUppercaseHex", func(e *controlevent.Event) { e.Checksum = goodSum[:len(goodSum)-1] + "A" }, "not lowercase hex"},
		{"ErrZeroControlVersion", func(e *controlevent.Event) { e.ControlVersion = 0 }, "control_version is 0"},
		{"OKControlVersionMaxInt64", func(e *controlevent.Event) { e.ControlVersion = math.MaxInt64 }, ""},
		{"ErrControlVersionAboveInt64", func(e *controlevent.Event) { e.ControlVersion = math.MaxInt64 + 1 }, "control_version 9223372036854775808 is above 9223372036854775807"},
		{"ErrControlVersionMaxUint64", func(e *controlevent.Event) { e.ControlVersion = math.MaxUint64 }, "control_version 18446744073709551615 is above"},
		// created_at is informational: any string literal, bounded.
		{"OKCreatedAtZero", func(e *controlevent.Event) { e.CreatedAt = time.Time{} }, ""},
		{"OKCreatedAtUnencodable", func(e *controlevent.Event) { e.CreatedAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, ""},
		{"OKCreatedAtRawEmpty", func(e *controlevent.Event) { e.CreatedAtRaw = `""` }, ""},
		{"OKCreatedAtRawText", func(e *controlevent.Event) { e.CreatedAtRaw = `"27.11.2026 \u00e9 <"` }, ""},
		{"OKCreatedAtRawMax", func(e *controlevent.Event) {
			e.CreatedAtRaw = `"` + strings.Repeat("x", controlevent.MaxCreatedAtRawLen-2) + `"`
		}, ""},
		{"ErrCreatedAtRawTooLong", func(e *controlevent.Event) {
			e.CreatedAtRaw = `"` + strings.Repeat("x", controlevent.MaxCreatedAtRawLen-1) + `"`
		}, "created_at as written is 1025 bytes; the limit is 1024"},
		{"ErrCreatedAtRawTooLongEscaped", func(e *controlevent.Event) {
			e.CreatedAtRaw = `"` + strings.Repeat("<", 200) + `"` // written as \u003c
		}, "created_at as written is 1202 bytes"},
		{"ErrCreatedAtRawUnquoted", func(e *controlevent.Event) { e.CreatedAtRaw = `2026-11-27` }, "not one JSON string literal"},
		{"ErrCreatedAtRawTrailing", func(e *controlevent.Event) { e.CreatedAtRaw = `"a" ` }, "not one JSON string literal"},
		{"ErrCreatedAtRawControl", func(e *controlevent.Event) { e.CreatedAtRaw = "\"a\nb\"" }, "not one JSON string literal"},
		{"ErrCreatedAtRawNull", func(e *controlevent.Event) { e.CreatedAtRaw = `null` }, "not one JSON string literal"},
		// Extra: one object of unknown members, bounded.
		{"OKExtra", func(e *controlevent.Event) { e.Extra = `{"id":7,"stack_id":"s","tenant_id":"t"}` }, ""},
		{"OKExtraNonCanonical", func(e *controlevent.Event) { e.Extra = `{ "z": 1, "a": [ 2 ] }` }, ""},
		{"OKExtraEmptyObject", func(e *controlevent.Event) { e.Extra = `{}` }, ""},
		{"OKExtraMax", func(e *controlevent.Event) {
			e.Extra = `{"x":"` + strings.Repeat("x", controlevent.MaxExtraLen-len(`{"x":""}`)) + `"}`
		}, ""},
		{"ErrExtraTooLong", func(e *controlevent.Event) {
			e.Extra = `{"x":"` + strings.Repeat("x", controlevent.MaxExtraLen-len(`{"x":""}`)+1) + `"}`
		}, "extra members are 49153 bytes; the limit is 49152"},
		{"ErrExtraTooLongEscaped", func(e *controlevent.Event) { e.Extra = `{"x":"` + strings.Repeat("&", 10_000) + `"}` }, "extra members are 60008 bytes"},
		{"ErrExtraHuge", func(e *controlevent.Event) { e.Extra = `{"x":"` + strings.Repeat("x", 1<<20) + `"}` }, "extra members are 1048584 bytes"},
		{"ErrExtraNotJSON", func(e *controlevent.Event) { e.Extra = `{"x":` }, "not valid JSON"},
		{"ErrExtraArray", func(e *controlevent.Event) { e.Extra = `[1]` }, "an array, not a JSON object"},
		{"ErrExtraNull", func(e *controlevent.Event) { e.Extra = `null` }, "null, not a JSON object"},
		{"ErrExtraKnown", func(e *controlevent.Event) { e.Extra = `{"control_version":1}` }, `extra member "control_version" is a known member`},
		{"ErrExtraCaseVariant", func(e *controlevent.Event) { e.Extra = `{"Key":"k"}` }, `"Key" differs from the known member "key" only in case`},
		{"ErrExtraDuplicate", func(e *controlevent.Event) { e.Extra = `{"a":1,"\u0061":2}` }, `extra member "a" appears twice`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := valid()
			tc.mutate(&e)
			err := e.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted %+v", e)
			}
			if !errors.Is(err, controlevent.ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "controlevent: event ") {
				t.Errorf("error %q, want prefix %q and substring %q", err, "controlevent: event ", tc.wantErr)
			}
			// ValidateUnpublished applies the same field rules.
			if tc.name != "ErrZeroControlVersion" && !strings.HasPrefix(tc.name, "ErrControlVersion") {
				u := e
				u.ControlVersion = 0
				if err := u.ValidateUnpublished(); !errors.Is(err, controlevent.ErrInvalid) {
					t.Errorf("ValidateUnpublished = %v, want ErrInvalid", err)
				}
			}
		})
	}
}

func TestEvent_ValidateUnpublished(t *testing.T) {
	e := valid()
	if err := e.ValidateUnpublished(); !errors.Is(err, controlevent.ErrInvalid) || !strings.Contains(err.Error(), "control_version is 17") {
		t.Fatalf("ValidateUnpublished of a stamped event = %v", err)
	}
	e.ControlVersion = 0
	if err := e.ValidateUnpublished(); err != nil {
		t.Fatalf("ValidateUnpublished: %v", err)
	}
}

func TestEvent_Validate_LongIDTruncatedInMessage(t *testing.T) {
	e := valid()
	e.EventID = strings.Repeat("x", 10_000)
	err := e.Validate()
	if err == nil || len(err.Error()) > 300 {
		t.Fatalf("error for a 10 kB EventID is %d bytes: %v", len(err.Error()), err)
	}
}

func TestNewEventID(t *testing.T) {
	seen := map[string]bool{}
	prev := ""
	for range 1000 {
		id := controlevent.NewEventID()
		u, err := uuid.Parse(id)
		if err != nil {
			t.Fatalf("NewEventID() = %q: %v", id, err)
		}
		if u.Version() != 7 || u.Variant() != uuid.RFC4122 {
			t.Fatalf("NewEventID() = %q: version %d variant %v, want a UUIDv7", id, u.Version(), u.Variant())
		}
		if id != u.String() {
			t.Fatalf("NewEventID() = %q is not in canonical form %q", id, u.String())
		}
		if seen[id] {
			t.Fatalf("NewEventID() repeated %q", id)
		}
		if id < prev {
			t.Fatalf("NewEventID() went backwards: %q after %q", id, prev)
		}
		seen[id], prev = true, id
		ev := controlevent.Event{EventID: id, Type: "t", ControlVersion: 1}
		if err := ev.Validate(); err != nil {
			t.Fatalf("an event with NewEventID() does not validate: %v", err)
		}
	}
}

// TestEvent_ValidEncodingFitsDecodeLimit: whatever passes Validate (and so
// ValidateUnpublished, the outbox's check) encodes within MaxEncodedSize, so
// every node can decode what a producer accepted. The event below takes
// every limit at its worst: each byte escaped to six.
func TestEvent_ValidEncodingFitsDecodeLimit(t *testing.T) {
	e := controlevent.Event{
		EventID:        strings.Repeat("<", controlevent.MaxEventIDLen),
		Type:           strings.Repeat(">", controlevent.MaxTypeLen),
		Key:            strings.Repeat("\x01", controlevent.MaxKeyLen),
		Version:        math.MinInt64,
		BaseVersion:    math.MinInt64,
		ArtifactRef:    strings.Repeat("&", controlevent.MaxArtifactRefLen),
		Checksum:       goodSum,
		ControlVersion: math.MaxInt64,
		CreatedAtRaw:   `"` + strings.Repeat("<", (controlevent.MaxCreatedAtRawLen-2)/6) + `"`,
		Extra:          `{"x":"` + strings.Repeat("x", controlevent.MaxExtraLen-len(`{"x":""}`)) + `"}`,
	}
	if err := e.Validate(); err != nil {
		t.Fatal(err)
	}
	b, err := controlevent.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > controlevent.MaxEncodedSize {
		t.Fatalf("a valid event encodes to %d bytes; Decode accepts at most %d", len(b), controlevent.MaxEncodedSize)
	}
	again, err := controlevent.Decode(b)
	if err != nil || again.Validate() != nil {
		t.Fatalf("Decode of a valid event's encoding: %v, %v", err, again.Validate())
	}
	t.Logf("worst-case valid event: %d of %d bytes", len(b), controlevent.MaxEncodedSize)
}
