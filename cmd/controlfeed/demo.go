package main

import (
	"context"
	"os"

	"github.com/controlfeed/controlfeed/internal/demo"
)

var demoCmd = &command{
	name:    "demo",
	summary: "run a producer and a fleet in this process, publish changes, verify every node",
	details: `Runs controlfeed end to end with nothing to set up: an embedded NATS
JetStream server on a random local port (or, with --feed file, a file feed),
one producer and --nodes fleet nodes, each with its own SQLite database in a
temporary directory. The producer makes --events kv changes (puts of values
from a few bytes to 64 KiB, each stored as an artifact, and some deletes);
progress is shown on stderr (bars on a terminal, else a line per second).

Then it verifies, for every node: its kv table's digest equals the
producer's, controlfeed_applied_events holds each of the feed's events
exactly once, and its cursor equals the feed's head; and it reports
throughput and the latency from the producer's commit to the node's commit
(p50, p99, p99.9, max). The last line is the verdict, PASS or FAIL; the exit
status is 1 on FAIL.

Logs of the in-process nodes show at warn level and above, all of them with
--log-level debug.`,
	example:  `controlfeed demo --nodes 5 --events 10000 --feed file --keep`,
	settings: []string{"nodes", "events", "feed", "keep", "rate", "log-format", "log-level"},
}

func (m *Main) runDemo(ctx context.Context, args []string) error {
	var s settings
	pos, err := demoCmd.parse(m, &s, args)
	if err != nil {
		return helpOK(err)
	}
	if len(pos) > 0 {
		return usageErrorf("controlfeed demo: unexpected argument %q", pos[0])
	}
	if s.DemoFeed != demo.FeedJetStream && s.DemoFeed != demo.FeedFile {
		return usageErrorf("controlfeed demo: --feed %q: want %s or %s", s.DemoFeed, demo.FeedJetStream, demo.FeedFile)
	}
	if s.Nodes < 1 || s.Nodes > 64 || s.Events < 1 || s.Rate < 0 {
		return usageErrorf("controlfeed demo: --nodes %d, --events %d, --rate %v: want 1..64 nodes, at least 1 event, a rate >= 0",
			s.Nodes, s.Events, s.Rate)
	}
	log, err := s.logger(m.Stderr)
	if err != nil {
		return err
	}
	_, err = demo.Run(ctx, demo.Options{
		Nodes:    s.Nodes,
		Events:   s.Events,
		Feed:     s.DemoFeed,
		Keep:     s.Keep,
		Rate:     s.Rate,
		Out:      m.Stdout,
		Progress: m.Stderr,
		Bars:     isTerminal(m.Stderr),
		Logger:   s.quietLogger(m.Stderr, log),
	})
	return err
}

// isTerminal reports whether w is a character device such as a terminal.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
