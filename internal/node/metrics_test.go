package node

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// writeMetrics writes s in the text exposition format, as GET /metrics
// shows it (without the runtime collectors).
func writeMetrics(b *strings.Builder, s *Status) error {
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(statusCollector{read: func(context.Context) (Status, error) { return *s, nil }}); err != nil {
		return err
	}
	mfs, err := reg.Gather()
	if err != nil {
		return err
	}
	enc := expfmt.NewEncoder(b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return err
		}
	}
	return nil
}

// The status metrics keep their names, types and values (dashboards and
// alerts read them): a golden list of every family with a sample status.
func TestStatusMetrics_Names(t *testing.T) {
	lag := uint64(3)
	s := &Status{Cursor: 7, Lag: &lag, OutboxPending: 2, OutboxDead: 1, Conflicts: 4,
		Halted:      &Halt{EventID: "e"},
		Unavailable: &Unavailable{Since: time.Now().Add(-time.Hour)}, Gap: &Gap{}, BehindRetention: "x", FeedBehindCursor: "y",
		Process: &ProcessStatus{Published: 5, PublishErrors: 6, Applied: 8, Gaps: 9, FeedError: "z"}}
	var b strings.Builder
	if err := writeMetrics(&b, s); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"# TYPE controlfeed_cursor gauge\ncontrolfeed_cursor 7\n",
		"# TYPE controlfeed_lag gauge\ncontrolfeed_lag 3\n",
		"# TYPE controlfeed_outbox_pending gauge\ncontrolfeed_outbox_pending 2\n",
		"# TYPE controlfeed_outbox_dead gauge\ncontrolfeed_outbox_dead 1\n",
		"# TYPE controlfeed_published_total counter\ncontrolfeed_published_total 5\n",
		"# TYPE controlfeed_publish_errors_total counter\ncontrolfeed_publish_errors_total 6\n",
		"# TYPE controlfeed_applied_total counter\ncontrolfeed_applied_total 8\n",
		"# TYPE controlfeed_conflicts gauge\ncontrolfeed_conflicts 4\n",
		"# TYPE controlfeed_halted gauge\ncontrolfeed_halted 1\n",
		"# TYPE controlfeed_unavailable gauge\ncontrolfeed_unavailable 1\n",
		"# TYPE controlfeed_unavailable_seconds gauge\ncontrolfeed_unavailable_seconds 3600",
		"# TYPE controlfeed_gap gauge\ncontrolfeed_gap 1\n",
		"# TYPE controlfeed_gaps_total counter\ncontrolfeed_gaps_total 9\n",
		"# TYPE controlfeed_behind_retention gauge\ncontrolfeed_behind_retention 1\n",
		"# TYPE controlfeed_feed_behind_cursor gauge\ncontrolfeed_feed_behind_cursor 1\n",
		"# TYPE controlfeed_feed_read_failing gauge\ncontrolfeed_feed_read_failing 1\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, b.String())
		}
	}
	if got := strings.Count(b.String(), "# TYPE "); got != len(statusMetrics) {
		t.Errorf("%d families, want %d", got, len(statusMetrics))
	}
	// Unknown head: no lag sample rather than a made-up 0.
	b.Reset()
	if err := writeMetrics(&b, &Status{}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "controlfeed_lag") || !strings.Contains(b.String(), "\ncontrolfeed_applied_total 0\n") {
		t.Errorf("without head and process:\n%s", b.String())
	}
}
