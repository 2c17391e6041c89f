package controlevent_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
)

// benchEvent is a typical published event: UUIDv7 id, kv.put, a payload
// reference, a nanosecond UTC timestamp.
func benchEvent() controlevent.Event {
	e := valid()
	e.CreatedAt = time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC)
	return e
}

// BenchmarkMarshal compares Marshal with the encoding/json baseline it must
// match byte for byte.
func BenchmarkMarshal(b *testing.B) {
	e := benchEvent()
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := controlevent.Marshal(e); err != nil {
				b.Fatal(err)
			}
		}
	})
	withExtra := e
	withExtra.Extra = `{"id":42,"stack_id":"stk-eu-1","tenant_id":"acme"}`
	withExtra.CreatedAtRaw = `""`
	b.Run("fast_extra", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := controlevent.Marshal(withExtra); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("append_reuse", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			var err error
			if buf, err = controlevent.AppendJSON(buf[:0], e); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDecode compares Decode on Marshal's output with its
// encoding/json-based slow path, and measures Decode on an indented file
// with extra members and an empty created_at, as the predecessor wrote them.
func BenchmarkDecode(b *testing.B) {
	enc, err := controlevent.Marshal(benchEvent())
	if err != nil {
		b.Fatal(err)
	}
	indented := []byte("{\n  \"id\": 42,\n  \"event_id\": \"0190f7d2-0000-7000-8000-000000000001\",\n" +
		"  \"tenant_id\": \"acme\",\n  \"stack_id\": \"stk-eu-1\",\n  \"type\": \"kv.put\",\n" +
		"  \"key\": \"tenants/acme\",\n  \"version\": 4,\n  \"control_version\": 17,\n  \"created_at\": \"\"\n}")
	b.Run("fast_extra_indented", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(indented)))
		for b.Loop() {
			if _, err := controlevent.Decode(indented); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(enc)))
		for b.Loop() {
			if _, err := controlevent.DecodeSlow(enc); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(enc)))
		for b.Loop() {
			if _, err := controlevent.Decode(enc); err != nil {
				b.Fatal(err)
			}
		}
	})
}
