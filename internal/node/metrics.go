package node

import (
	"context"
	"net/http"
	"time"

	"github.com/controlfeed/controlfeed/fleet"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsReadTimeout bounds the status read of one scrape.
const metricsReadTimeout = 10 * time.Second

// statusMetric is one metric derived from a Status at each scrape.
type statusMetric struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	value func(s *Status, p *ProcessStatus) (float64, bool) // false = omit
}

func newStatusMetric(name, help string, typ prometheus.ValueType, value func(*Status, *ProcessStatus) (float64, bool)) statusMetric {
	return statusMetric{desc: prometheus.NewDesc(name, help, nil, nil), typ: typ, value: value}
}

func always(f func(*Status, *ProcessStatus) float64) func(*Status, *ProcessStatus) (float64, bool) {
	return func(s *Status, p *ProcessStatus) (float64, bool) { return f(s, p), true }
}

func flag(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// statusMetrics are the metrics read from Status: their names and meanings
// are part of the node's interface (dashboards and alerts use them), so an
// entry is never renamed or redefined, only added.
var statusMetrics = []statusMetric{
	newStatusMetric("controlfeed_cursor", "Highest ControlVersion this node has applied or moved past.", prometheus.GaugeValue,
		always(func(s *Status, _ *ProcessStatus) float64 { return float64(s.Cursor) })),
	newStatusMetric("controlfeed_lag", "Events in the feed after this node's cursor.", prometheus.GaugeValue,
		func(s *Status, _ *ProcessStatus) (float64, bool) {
			if s.Lag == nil {
				return 0, false // the head is unknown
			}
			return float64(*s.Lag), true
		}),
	newStatusMetric("controlfeed_outbox_pending", "Outbox rows not yet published.", prometheus.GaugeValue,
		always(func(s *Status, _ *ProcessStatus) float64 { return float64(s.OutboxPending) })),
	newStatusMetric("controlfeed_outbox_dead", "Outbox rows that can never be published.", prometheus.GaugeValue,
		always(func(s *Status, _ *ProcessStatus) float64 { return float64(s.OutboxDead) })),
	newStatusMetric("controlfeed_published_total", "Events this process's pump published.", prometheus.CounterValue,
		always(func(_ *Status, p *ProcessStatus) float64 { return float64(p.Published) })),
	newStatusMetric("controlfeed_publish_errors_total", "Failed publish attempts of this process's pump.", prometheus.CounterValue,
		always(func(_ *Status, p *ProcessStatus) float64 { return float64(p.PublishErrors) })),
	newStatusMetric("controlfeed_applied_total", "Events this process's applier applied.", prometheus.CounterValue,
		always(func(_ *Status, p *ProcessStatus) float64 { return float64(p.Applied) })),
	newStatusMetric("controlfeed_conflicts", "Conflicting duplicates detected: an applied event id delivered again with different content.", prometheus.GaugeValue,
		always(func(s *Status, _ *ProcessStatus) float64 { return float64(s.Conflicts) })),
	newStatusMetric("controlfeed_halted", "1 when the applier is halted at an event that cannot be applied (fix the cause or skip the event).", prometheus.GaugeValue,
		always(func(s *Status, _ *ProcessStatus) float64 { return flag(s.Halted != nil) })),
	newStatusMetric("controlfeed_database_unreadable", "1 while the process cannot read its database (a PostgreSQL server that is down): the metrics read from it keep their last values.", prometheus.GaugeValue,
		always(func(s *Status, _ *ProcessStatus) float64 { return flag(s.DatabaseError != "") })),
	newStatusMetric("controlfeed_security_halted", "1 when the applier refused an event that failed signature or chain verification (a security halt: find out who wrote it; see docs/SECURITY.md). controlfeed_halted is 1 too.", prometheus.GaugeValue,
		always(func(s *Status, _ *ProcessStatus) float64 { return flag(s.Halted != nil && s.Halted.Security != "") })),
	newStatusMetric("controlfeed_unavailable", "1 while the feed, the artifact store or the local database cannot serve the applier (it retries; nothing to skip).", prometheus.GaugeValue,
		always(func(s *Status, _ *ProcessStatus) float64 { return flag(s.Unavailable != nil) })),
	newStatusMetric("controlfeed_unavailable_seconds", "How long the applier has been unavailable; 0 when it is not.", prometheus.GaugeValue,
		always(func(s *Status, _ *ProcessStatus) float64 {
			if s.Unavailable == nil {
				return 0
			}
			return max(time.Since(s.Unavailable.Since).Seconds(), 0)
		})),
	newStatusMetric("controlfeed_gap", "1 while the feed has not delivered a position it still holds (nothing past the cursor is applied).", prometheus.GaugeValue,
		always(func(s *Status, _ *ProcessStatus) float64 { return flag(s.Gap != nil) })),
	newStatusMetric("controlfeed_gaps_total", "Gaps in the feed this process's applier met.", prometheus.CounterValue,
		always(func(_ *Status, p *ProcessStatus) float64 { return float64(p.Gaps) })),
	newStatusMetric("controlfeed_behind_retention", "1 when the node's cursor is older than the feed's retention.", prometheus.GaugeValue,
		always(func(s *Status, _ *ProcessStatus) float64 { return flag(s.BehindRetention != "") })),
	newStatusMetric("controlfeed_feed_behind_cursor", "1 when the feed's head is below the node's cursor (the feed was recreated or lost events).", prometheus.GaugeValue,
		always(func(s *Status, _ *ProcessStatus) float64 { return flag(s.FeedBehindCursor != "") })),
	newStatusMetric("controlfeed_feed_read_failing", "1 while the applier's reads of the feed fail (see feed_error in /v1/status).", prometheus.GaugeValue,
		always(func(_ *Status, p *ProcessStatus) float64 { return flag(p.FeedError != "") })),
}

// reporterMetrics are the fleet reporter's counters (fleet.ReporterStats),
// so that a node whose reports stop reaching the fleet (a report store that
// refuses writes: the node looks stale in "controlfeed fleet" while it
// applies) can be alerted on from the node itself. Like statusMetrics,
// never renamed, only added.
func reporterMetrics(r *fleet.Reporter) []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "controlfeed_fleet_reports_total",
			Help: "Fleet reports this process wrote to the report store."},
			func() float64 { return float64(r.Stats().Published) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "controlfeed_fleet_report_failures_total",
			Help: "Fleet reports this process failed to write (it retries at the next look; the last error is logged)."},
			func() float64 { return float64(r.Stats().Failures) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "controlfeed_fleet_report_last_success_timestamp_seconds",
			Help: "Unix time of this process's last fleet report written; 0 before the first."},
			func() float64 {
				if t := r.Stats().LastPublishedAt; !t.IsZero() {
					return float64(t.UnixNano()) / 1e9
				}
				return 0
			}),
	}
}

// statusCollector exports statusMetrics from the Status read at each
// scrape. A failed read makes the scrape fail (HTTP 500) rather than
// report stale or zero values.
type statusCollector struct {
	read func(context.Context) (Status, error)
}

// Describe implements prometheus.Collector.
func (c statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range statusMetrics {
		ch <- m.desc
	}
}

// Collect implements prometheus.Collector.
func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), metricsReadTimeout)
	defer cancel()
	s, err := c.read(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(statusMetrics[0].desc, err)
		return
	}
	collectStatus(ch, &s)
}

// collectStatus sends s as statusMetrics. Lag is omitted when the head is
// unknown; process counters are 0 when s has no Process.
func collectStatus(ch chan<- prometheus.Metric, s *Status) {
	p := s.Process
	if p == nil {
		p = &ProcessStatus{}
	}
	for _, m := range statusMetrics {
		if v, ok := m.value(s, p); ok {
			ch <- prometheus.MustNewConstMetric(m.desc, m.typ, v)
		}
	}
}

// newRegistry returns the registry of one Node: Go runtime and process
// collectors and the node's status metrics (the applier and the pump add
// their histograms in Open).
func (n *Node) newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		statusCollector{read: n.Status})
	return reg
}

// Registry returns the node's Prometheus registry, which GET /metrics
// serves: the status metrics, the applier's and the pump's histograms, and
// the Go runtime and process collectors. A program embedding the node may
// register its own collectors on it (names must not collide). It is safe
// for concurrent use.
func (n *Node) Registry() *prometheus.Registry { return n.reg }

// metricsHandler serves the registry in the exposition format the scraper
// asks for (text by default); a failed status read answers 500.
func (n *Node) metricsHandler() http.Handler {
	return promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError, ErrorLog: slogPrinter{n}})
}

// slogPrinter passes promhttp's errors to the node's log.
type slogPrinter struct{ n *Node }

func (p slogPrinter) Println(v ...any) { p.n.log.Warn("metrics: scrape failed", "err", v) }
