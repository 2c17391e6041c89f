// Package backoff is the one retry-delay policy of controlfeed: the pump
// retrying a failed publish and the applier retrying a halted event wait the
// same way (backends never retry on their own).
package backoff

import (
	"math/rand/v2"
	"time"
)

// Delay returns how long to wait before retry number attempt (1-based): the
// delay doubles from min with each attempt, is capped at max, and is
// jittered uniformly into [d/2, d] so that many processes retrying the same
// broker do not do so in lockstep. Values of attempt below 1 count as 1.
// It is safe for concurrent use.
func Delay(attempt int, min, max time.Duration) time.Duration {
	d := min
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1)
}
