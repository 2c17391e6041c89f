package backoff

import (
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	const lo, hi = 100 * time.Millisecond, time.Second
	for attempt := 0; attempt < 80; attempt++ {
		want := time.Duration(min(int64(lo)<<min(max(attempt-1, 0), 20), int64(hi)))
		for range 50 {
			if d := Delay(attempt, lo, hi); d < want/2 || d > want {
				t.Fatalf("Delay(%d) = %v, want within [%v, %v]", attempt, d, want/2, want)
			}
		}
	}
	// Jitter: repeated delays for the same attempt are not all equal.
	seen := map[time.Duration]bool{}
	for range 50 {
		seen[Delay(3, lo, hi)] = true
	}
	if len(seen) < 2 {
		t.Error("Delay(3) returned the same value 50 times: no jitter")
	}
	if d := Delay(5, 0, 0); d != 0 {
		t.Errorf("Delay with a zero range = %v, want 0", d)
	}
}
