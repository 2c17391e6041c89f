package applier

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Names of the histograms New registers on Config.Registerer.
const (
	// MetricApplyDuration is the time of one committed apply
	// transaction: handlers, bookkeeping, cursor, commit (a catch-up
	// batch is one observation).
	MetricApplyDuration = "controlfeed_apply_duration_seconds"
	// MetricEventAge is, per event applied, the time from its CreatedAt
	// to the commit that applied it (0 when the clocks disagree).
	MetricEventAge = "controlfeed_event_age_at_apply_seconds"
)

// Buckets of the histograms, in seconds.
var (
	applyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	ageBuckets   = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}
)

// metrics are the applier's histograms; a nil *metrics observes nothing.
type metrics struct {
	apply prometheus.Histogram
	age   prometheus.Histogram
}

// newMetrics registers the histograms on reg, or returns nil for a nil
// reg. Registering twice on one registry fails: one Applier per registry.
func newMetrics(reg prometheus.Registerer) (m *metrics, err error) {
	if reg == nil {
		return nil, nil
	}
	defer func() {
		if r := recover(); r != nil {
			m, err = nil, fmt.Errorf("applier: new: register metrics: %v (one Applier per registry)", r)
		}
	}()
	f := promauto.With(reg)
	return &metrics{
		apply: f.NewHistogram(prometheus.HistogramOpts{Name: MetricApplyDuration,
			Help:    "Time of one committed apply transaction (handlers, records, cursor, commit); a catch-up batch is one observation.",
			Buckets: applyBuckets}),
		age: f.NewHistogram(prometheus.HistogramOpts{Name: MetricEventAge,
			Help:    "Per applied event, the time from its created_at to the commit that applied it (producer to node latency; 0 when the clocks disagree).",
			Buckets: ageBuckets}),
	}, nil
}

// observe records one committed transaction that began at start and
// committed at end, with the items it committed.
func (m *metrics) observe(start, end time.Time, plan []item) {
	if m == nil {
		return
	}
	m.apply.Observe(end.Sub(start).Seconds())
	for i := range plan {
		it := &plan[i]
		if it.dup || it.ev.CreatedAt.IsZero() {
			continue
		}
		m.age.Observe(max(end.Sub(it.ev.CreatedAt).Seconds(), 0))
	}
}
