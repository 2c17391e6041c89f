package bench

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/fleet"
	_ "github.com/controlfeed/controlfeed/fleet/natsfleet" // the reports' store on JetStream
	"github.com/controlfeed/controlfeed/internal/node"
)

// reportsResult measures what a node's fleet reports cost its catch-up:
// two nodes run as serve runs them (node.Open, node.Run), one with
// FleetReports and the default debounce and heartbeat, one without, each
// catching up on the same n events with its own consumer and database;
// the result is the rate with reports against the rate without (same
// run, same stream).
func reportsResult(ctx context.Context, e *env, srv *server, artifactDir string, n int) (Result, error) {
	base := srv.feedConfig("APPLY", "")
	st, err := fleet.Open(ctx, "jetstream", fleet.Config{Feed: feed.SourceConfig{NATS: base}, Create: true})
	if err != nil {
		return Result{}, err
	}
	if c, ok := st.(io.Closer); ok {
		c.Close()
	}
	// Off, on, on, off: a drift of the machine's load during the four
	// runs weighs on both sides alike.
	var secs [2]float64
	for i, reports := range []bool{false, true, true, false} {
		name := fmt.Sprintf("node-reports-%d", i)
		took, err := catchUpNode(ctx, e, srv.feedConfig("APPLY", name), artifactDir, name, reports, n)
		if err != nil {
			return Result{}, err
		}
		if reports {
			secs[1] += took.Seconds()
		} else {
			secs[0] += took.Seconds()
		}
	}
	return ratioResult("apply/node-reports", "events/s", float64(2*n)/secs[1], float64(2*n)/secs[0], 0.9,
		fmt.Sprintf("%d events caught up by a node as serve runs it, writing fleet reports (every %v on change, heartbeat %v) vs not; runs off, on, on, off", n, fleet.DefaultDebounce, fleet.DefaultHeartbeat)), nil
}

// catchUpNode opens a node on the stream of cfg and returns how long it
// takes its applier to reach cursor n.
func catchUpNode(ctx context.Context, e *env, cfg feed.NATSConfig, artifactDir, name string, reports bool, n int) (time.Duration, error) {
	start := time.Now()
	nd, err := node.Open(ctx, &node.Config{
		DB: filepath.Join(e.dir, name+".db"), FeedSource: "jetstream", Feed: feed.SourceConfig{NATS: cfg},
		ArtifactStore: "file", Artifact: artifact.Config{Dir: artifactDir}, NodeName: name, FleetReports: reports,
	})
	if err != nil {
		return 0, err
	}
	defer nd.Close()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- nd.Run(rctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		st := nd.Applier().Status()
		switch {
		case st.Cursor >= uint64(n):
			return time.Since(start), nil
		case st.Halted != nil:
			return 0, fmt.Errorf("catch up to %d: halted at control version %d: %s", n, st.Halted.ControlVersion, st.Halted.Error)
		case time.Now().After(deadline):
			return 0, fmt.Errorf("catch up to %d: cursor %d: %w", n, st.Cursor, errNotConverged)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}
