//go:build stress

package natsfeed_test

import (
	"testing"
	"time"
)

// The stress versions of the stall and disconnect tests: many more trials
// than the default run (go test -tags stress -run Stress ./feed/natsfeed/;
// a few minutes).

func TestStress_SourceStall(t *testing.T) {
	runStall(t, stallPlan{lanes: 32, stalls: 8, minStall: 500 * time.Millisecond, maxStall: 5 * time.Second, maxGap: 2 * time.Second})
}

func TestStress_SinkAppendBatchCut(t *testing.T) {
	runCut(t, cutPlan{lanes: 20, trials: 50, batch: 300})
}
