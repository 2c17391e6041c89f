package controlevent_test

import (
	"errors"
	"strings"
	"testing"

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
		e, err := controlevent.Decode([]byte("\n {\"event_id\":\"e\",\"type\":\"t\",\"control_version\":3,\"future\":{\"x\":[1]}} \n\t"))
		if err != nil || e.EventID != "e" || e.ControlVersion != 3 {
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
		"ErrNull":           `null`,
		"ErrNullSpaced":     " null \n",
		"ErrTrailingNBSP":   string(good) + "\u00a0",
		"ErrTrailingLS":     string(good) + "\u2028",
		"ErrTrailingPS":     string(good) + "\n\u2029",
		"ErrTrailingNEL":    string(good) + "\u0085",
		"ErrTrailingIdeoSp": string(good) + "\u3000",
		"ErrTrailingVT":     string(good) + "\v",
		"ErrTrailingFF":     string(good) + "\f",
		"ErrNotObjectBool":  `true`,
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
}
