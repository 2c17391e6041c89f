package outbox_test

import (
	"testing"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/outbox"
)

// FuzzDecodePayload feeds arbitrary payload_json to the pump's decode path.
// It must never panic, and whatever it accepts must be publishable: the row's
// event_id, ControlVersion 0, valid, and stable under re-encoding.
func FuzzDecodePayload(f *testing.F) {
	good, _ := controlevent.Marshal(newEvent(1))
	f.Add("evt-0001", good)
	f.Add("evt-0002", good)
	f.Add("evt-0001", []byte(`{"event_id":"evt-0001","type":"kv.put","control_version":3}`))
	f.Add("evt-0001", []byte(`{"event_id":"evt-0001","type":"kv.put"} {}`))
	f.Add("", []byte(`{"event_id":"","type":"x"}`))
	f.Add("x", []byte(`null`))
	f.Add("x", []byte(`{"event_id":"x","type":"t","artifact_ref":"sha256:00"}`))
	f.Fuzz(func(t *testing.T, eventID string, payload []byte) {
		e, err := outbox.DecodePayload(eventID, payload)
		if err != nil {
			return
		}
		if e.EventID != eventID {
			t.Fatalf("accepted event_id %q for row %q", e.EventID, eventID)
		}
		if e.ControlVersion != 0 {
			t.Fatalf("accepted ControlVersion %d", e.ControlVersion)
		}
		if err := e.ValidateUnpublished(); err != nil {
			t.Fatalf("accepted an invalid event: %v", err)
		}
		b, err := controlevent.Marshal(e)
		if err != nil {
			t.Fatalf("accepted event does not re-encode: %v", err)
		}
		again, err := outbox.DecodePayload(eventID, b)
		if err != nil {
			t.Fatalf("re-encoded event rejected: %v", err)
		}
		if !again.CreatedAt.Equal(e.CreatedAt) {
			t.Fatalf("CreatedAt changed across re-encoding: %v -> %v", e.CreatedAt, again.CreatedAt)
		}
		again.CreatedAt = e.CreatedAt
		if again != e {
			t.Fatalf("re-encoding changed the event:\n%+v\n%+v", e, again)
		}
	})
}
