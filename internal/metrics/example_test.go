package metrics_test

import (
	"os"

	"github.com/controlfeed/controlfeed/internal/metrics"
)

func Example() {
	w := metrics.NewWriter(os.Stdout)
	w.Gauge("controlfeed_cursor", "Highest ControlVersion applied.", 42)
	w.Counter("controlfeed_applied_total", "Events applied by this process.", 7)
	if err := w.Err(); err != nil {
		panic(err)
	}
	// Output:
	// # HELP controlfeed_cursor Highest ControlVersion applied.
	// # TYPE controlfeed_cursor gauge
	// controlfeed_cursor 42
	// # HELP controlfeed_applied_total Events applied by this process.
	// # TYPE controlfeed_applied_total counter
	// controlfeed_applied_total 7
}
