package node

import (
	"strings"
	"testing"
	"time"
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
