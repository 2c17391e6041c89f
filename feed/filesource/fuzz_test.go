package filesource

import (
	"errors"
	"testing"

	"github.com/controlfeed/controlfeed/controlevent"
)

// FuzzParseFile: the event-file parser never panics; what it accepts is a
// valid published event that survives Marshal and a second parse unchanged;
// what it rejects wraps controlevent.ErrInvalid.
func FuzzParseFile(f *testing.F) {
	f.Add([]byte(`{"event_id":"e1","type":"kv.put","control_version":1,"created_at":"2026-01-02T03:04:05Z"}`))
	f.Add([]byte(`{"event_id":"e1","type":"kv.put","control_version":0}`))
	f.Add([]byte("{\"event_id\":\"../x\",\"type\":\"t\",\"control_version\":18446744073709551615}\n"))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := parseEvent(b)
		if err != nil {
			if !errors.Is(err, controlevent.ErrInvalid) {
				t.Fatalf("parseEvent error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if err := ev.Validate(); err != nil {
			t.Fatalf("parseEvent accepted an invalid event: %v", err)
		}
		enc, err := controlevent.Marshal(ev)
		if err != nil {
			t.Fatalf("Marshal of a parsed event: %v", err)
		}
		again, err := parseEvent(enc)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", enc, err)
		}
		if again.CreatedAt.Equal(ev.CreatedAt) {
			again.CreatedAt = ev.CreatedAt
		}
		if again != ev {
			t.Fatalf("round trip changed the event:\n %+v\n %+v", ev, again)
		}
	})
}
