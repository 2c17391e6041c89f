package controlevent_test

import (
	"testing"

	"github.com/controlfeed/controlfeed/controlevent"
)

// FuzzDecodeValidate: Decode and Validate never panic, and an event that
// validates survives Marshal then Decode unchanged.
func FuzzDecodeValidate(f *testing.F) {
	good, _ := controlevent.Marshal(valid())
	f.Add(good)
	f.Add([]byte(`{"event_id":"e","type":"t","control_version":1}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := controlevent.Decode(b)
		if err != nil {
			return
		}
		if e.Validate() != nil {
			_ = e.ValidateUnpublished()
			return
		}
		enc, err := controlevent.Marshal(e)
		if err != nil {
			t.Fatalf("Marshal of a valid event: %v", err)
		}
		again, err := controlevent.Decode(enc)
		if err != nil {
			t.Fatalf("Decode(Marshal(e)) of %s: %v", enc, err)
		}
		if err := again.Validate(); err != nil {
			t.Fatalf("round-tripped event no longer validates: %v", err)
		}
		if !again.CreatedAt.Equal(e.CreatedAt) {
			t.Fatalf("CreatedAt changed: %v -> %v", e.CreatedAt, again.CreatedAt)
		}
		again.CreatedAt = e.CreatedAt
		if again != e {
			t.Fatalf("round trip changed the event:\n %+v\n %+v", e, again)
		}
	})
}
