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

// BenchmarkDecode compares Decode on Marshal's output with the previous
// encoding/json implementation.
func BenchmarkDecode(b *testing.B) {
	enc, err := controlevent.Marshal(benchEvent())
	if err != nil {
		b.Fatal(err)
	}
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(enc)))
		for b.Loop() {
			if _, err := controlevent.DecodeJSON(enc); err != nil {
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
