package outbox

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// MetricPublishDuration is the histogram NewPump registers on
// Config.Registerer: the time of each call to the Sink (an Append, or an
// AppendBatch of a window of rows), failed calls included.
const MetricPublishDuration = "controlfeed_publish_duration_seconds"

// publishBuckets are MetricPublishDuration's buckets, in seconds.
var publishBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// newPublishHistogram registers MetricPublishDuration on reg, or returns
// nil for a nil reg.
func newPublishHistogram(reg prometheus.Registerer) (h prometheus.Histogram, err error) {
	if reg == nil {
		return nil, nil
	}
	defer func() {
		if r := recover(); r != nil {
			h, err = nil, fmt.Errorf("outbox: new pump: register metrics: %v (one Pump per registry)", r)
		}
	}()
	return promauto.With(reg).NewHistogram(prometheus.HistogramOpts{Name: MetricPublishDuration,
		Help:    "Time of one call to the feed sink (an Append, or an AppendBatch of a window of rows), failed calls included.",
		Buckets: publishBuckets}), nil
}

// observePublish records one Sink call that started at start.
func (p *Pump) observePublish(start time.Time) {
	if p.publishDur != nil {
		p.publishDur.Observe(time.Since(start).Seconds())
	}
}
