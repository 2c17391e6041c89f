package node

import (
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/internal/metrics"
)

// Reads of the feed that fail briefly (a broker restart) leave the node
// healthy; failing past FeedErrorGrace makes it unhealthy with the reason.
func TestStatus_HealthFeedError(t *testing.T) {
	recent := time.Now().Add(-time.Second)
	s := &Status{Process: &ProcessStatus{FeedError: "poll: connection refused", FeedErrorSince: &recent}}
	if r := s.Health(); len(r) != 0 {
		t.Fatalf("Health with a fresh feed error = %q, want healthy", r)
	}
	old := time.Now().Add(-2 * FeedErrorGrace)
	s.Process.FeedErrorSince = &old
	r := s.Health()
	if len(r) != 1 || !strings.Contains(r[0], "cannot read the feed") || !strings.Contains(r[0], "connection refused") {
		t.Fatalf("Health with a lasting feed error = %q", r)
	}
	s.Process.FeedError, s.Process.FeedErrorSince = "", nil
	if r := s.Health(); len(r) != 0 {
		t.Fatalf("Health after recovery = %q", r)
	}
}

// A feed whose head is below the cursor (recreated, or lost its newest
// events) makes the node unhealthy with the applier's explanation, and
// shows as controlfeed_feed_behind_cursor 1.
func TestStatus_HealthFeedBehindCursor(t *testing.T) {
	s := &Status{FeedBehindCursor: "feed jetstream: its head is at control version 2, below this node's cursor 5: ... re-bootstrap"}
	r := s.Health()
	if len(r) != 1 || !strings.Contains(r[0], "below this node's cursor") {
		t.Fatalf("Health = %q, want the feed-behind-cursor reason", r)
	}
	var b strings.Builder
	if err := WriteMetrics(metrics.NewWriter(&b), s); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "\ncontrolfeed_feed_behind_cursor 1\n") {
		t.Fatalf("metrics lack controlfeed_feed_behind_cursor 1:\n%s", b.String())
	}
	s.FeedBehindCursor = ""
	b.Reset()
	if err := WriteMetrics(metrics.NewWriter(&b), s); err != nil {
		t.Fatal(err)
	}
	if r := s.Health(); len(r) != 0 || !strings.Contains(b.String(), "\ncontrolfeed_feed_behind_cursor 0\n") {
		t.Fatalf("after it clears: Health %q, metrics:\n%s", r, b.String())
	}
}
