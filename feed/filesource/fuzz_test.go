package filesource

import (
	"encoding/json"
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

// FuzzBadFilePosition: the position scan of bad files never panics, never
// yields a position above maxPosition, and agrees with the decoder: for any
// content that is a valid event, it finds the event's control_version and
// event_id.
func FuzzBadFilePosition(f *testing.F) {
	f.Add([]byte(`{"event_id":"e1","type":"kv.put","control_version":1,"created_at":"2026-01-02T03:04:05Z"}`))
	f.Add([]byte(`{"event_id":"","type":"t","control_version":5}`))
	f.Add([]byte(`{"CONTROL_VERSION":7,"control_version":null,"Event_ID":"x","type":"t"}`))
	f.Add([]byte(`{"control_version":6,"event_id":"e6","key":"trunc`))
	f.Add([]byte(`{"control_version":9223372036854775808,"event_id":"big"}`))
	f.Add([]byte("\x00\xff{"))
	f.Fuzz(func(t *testing.T, b []byte) {
		pos, id := badFilePosition("x.json", b)
		if pos > maxPosition {
			t.Fatalf("position %d above %d", pos, uint64(maxPosition))
		}
		ev, err := parseEvent(b)
		if err != nil {
			return
		}
		if pos != ev.ControlVersion || id != ev.EventID {
			t.Fatalf("scan found position %d, id %q; the decoder %d, %q in %q", pos, id, ev.ControlVersion, ev.EventID, b)
		}
	})
}

// FuzzParseMarker: the prune marker parser never panics, and what it
// accepts is consistent (pruned_through >= 1, high_water >= pruned_through,
// within maxPosition) and survives a round trip.
func FuzzParseMarker(f *testing.F) {
	f.Add([]byte(`{"format":1,"pruned_through":3,"high_water":5,"pruned_at":"2026-01-02T03:04:05Z"}`))
	f.Add([]byte(`{"format":1,"pruned_through":5,"high_water":4}`))
	f.Add([]byte(`{"format":2}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMarker(b)
		if err != nil {
			return
		}
		if m.PrunedThrough == 0 || m.HighWater < m.PrunedThrough || m.HighWater > maxPosition || m.Format != markerFormat {
			t.Fatalf("accepted an inconsistent marker %+v from %q", m, b)
		}
		enc, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		again, err := parseMarker(enc)
		if err != nil || again != m {
			t.Fatalf("round trip of %+v: %+v, %v", m, again, err)
		}
	})
}
