package controlevent_test

import (
	"testing"

	"github.com/controlfeed/controlfeed/controlevent"
)

// FuzzDecodeValidate: Decode and Validate never panic, and an event that
// validates encodes within MaxEncodedSize and survives Marshal then Decode
// unchanged, its extra members and created_at as written included.
func FuzzDecodeValidate(f *testing.F) {
	good, _ := controlevent.Marshal(valid())
	f.Add(good)
	f.Add([]byte(`{"event_id":"e","type":"t","control_version":1}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"event_id":"e","type":"t","control_version":1,"zeta":{"c":[1,true,null]},"alpha":"x"}`))
	f.Add([]byte("{\n  \"id\": 1,\n  \"event_id\": \"e\",\n  \"tenant_id\": \"acme\",\n  \"type\": \"t\",\n  \"control_version\": 10,\n  \"created_at\": \"\"\n}"))
	f.Add([]byte(`{"event_id":"e","type":"t","control_version":1,"created_at":"2026-11-27 10:00","x":{"y":[1,"<"]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		// DecodePublished is Decode, a ControlVersion and Validate in one.
		p, perr := controlevent.DecodePublished(b, 7)
		q, qerr := controlevent.Decode(b)
		if qerr == nil {
			q.ControlVersion = 7
			qerr = q.Validate()
		}
		if perr == nil && qerr == nil && p.CreatedAt.Equal(q.CreatedAt) {
			p.CreatedAt = q.CreatedAt // a fixed zone is a new *Location per decode
		}
		if (perr == nil) != (qerr == nil) || perr != nil && perr.Error() != qerr.Error() || perr == nil && p != q {
			t.Fatalf("DecodePublished = %+v, %v; Decode and Validate = %+v, %v", p, perr, q, qerr)
		}
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
		if len(enc) > controlevent.MaxEncodedSize {
			t.Fatalf("a valid event encodes to %d bytes, above MaxEncodedSize", len(enc))
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
