package controlevent_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
)

func Example() {
	payload := []byte(`{"name":"acme"}`)
	e := controlevent.Event{
		EventID:   "0190f7d2-0000-7000-8000-000000000001", // controlevent.NewEventID() in real code
		Type:      "kv.put",
		Key:       "tenants/acme",
		Version:   1,
		Checksum:  controlevent.Checksum(payload),
		CreatedAt: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC),
	}
	fmt.Println("producer side:", e.ValidateUnpublished())
	fmt.Println("consumer side:", errors.Is(e.Validate(), controlevent.ErrInvalid)) // not stamped yet

	e.ControlVersion = 17 // what a Sink does
	b, _ := controlevent.Marshal(e)
	got, _ := controlevent.Decode(b)
	fmt.Println(got.ControlVersion, got.Validate(), controlevent.VerifyChecksum(payload, got.Checksum))
	// Output:
	// producer side: <nil>
	// consumer side: true
	// 17 <nil> <nil>
}

// An event written by another producer keeps the members controlfeed does
// not know, and its created_at as written.
func ExampleEvent_ExtraField() {
	file := []byte(`{
  "id": 42,
  "event_id": "0190f7d2-0000-7000-8000-00000000000a",
  "tenant_id": "acme",
  "type": "kv.put",
  "control_version": 10,
  "created_at": ""
}`)
	e, err := controlevent.Decode(file)
	if err != nil {
		fmt.Println(err)
		return
	}
	tenant, ok := e.ExtraField("tenant_id")
	fmt.Println(string(tenant), ok, e.Validate())
	fmt.Printf("created_at %q\n", e.CreatedAtText())
	b, _ := controlevent.Marshal(e)
	fmt.Println(string(b))
	// Output:
	// "acme" true <nil>
	// created_at ""
	// {"event_id":"0190f7d2-0000-7000-8000-00000000000a","type":"kv.put","control_version":10,"created_at":"","id":42,"tenant_id":"acme"}
}
