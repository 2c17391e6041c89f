package outbox

import (
	"testing"
	"time"
)

// DecodePayload exposes the pump's payload decoding to the fuzz test.
var DecodePayload = decodePayload

func TestDialectMigrationsMatchSchemaVersion(t *testing.T) {
	if got := len(dia.migrations); got != SchemaVersion {
		t.Fatalf("dialect %s has %d migrations, SchemaVersion is %d", dia.name, got, SchemaVersion)
	}
}

func TestBackoff(t *testing.T) {
	p := &Pump{cfg: Config{MinBackoff: 100, MaxBackoff: 1000}}
	for n := 1; n < 80; n++ {
		want := time.Duration(min(100<<min(n-1, 20), 1000))
		d := p.backoff(n)
		if d < want/2 || d > want {
			t.Errorf("backoff(%d) = %v, want within [%v, %v]", n, d, want/2, want)
		}
	}
}

// SetSyncFile replaces the pump's fsync step for one test.
func SetSyncFile(t testing.TB, f func(real func(string) error, path string) error) {
	real := syncFile
	syncFile = func(path string) error { return f(real, path) }
	t.Cleanup(func() { syncFile = real })
}
