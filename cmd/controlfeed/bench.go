package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/controlfeed/controlfeed/bench"
)

var benchCmd = &command{
	name:    "bench",
	summary: "measure the pipeline against raw JetStream and SQLite baselines",
	details: `Runs the benchmark harness (package bench) on this machine: an embedded
NATS server and SQLite databases in a temporary directory (removed at the end).
Each line measures one path next to a raw baseline of the same work done
directly on the same server and disk, with their ratio and the target:

  pump/sync       outbox pump, one Append per row, vs js.Publish with Msg-Id
  pump/batch      outbox pump through AppendBatch vs PublishAsync, 256 in flight
  apply/catch-up  applier draining a pre-filled stream vs raw 100-row inserts
  e2e/latency     producer commit -> applied on 3 nodes at 1k events/s, vs
                  publish -> consume -> commit -> ack on 3 raw consumers
  e2e/latency-vs-durable-raw
                  the same, against raw preceded by the producer's durable
                  write (SQLite commit + WAL fsync, then publish); not the
                  target's baseline
  file/append     file feed durable append vs write+fsync+rename
  file/poll       file feed Poll on a 100k-event history vs a 1k one
  rss/catch-up    peak RSS of a child process (this binary re-executed as
                  "controlfeed bench child ...") catching up on 1M events
  sign/pump       the batch pump signing every event vs not signing
  sign/catch-up   catch-up verifying every event's signature and chain vs
                  the same events unsigned (target: at most 10% slower)
  fanout/latency  e2e/latency with 100 nodes (each its own SQLite file and
                  consumer) vs 3 nodes, each on its own embedded server

With --postgres-url, also the outbox on that PostgreSQL server:

  pgpump/sync     the pump, one Append per row, vs js.Publish with Msg-Id and
                  one UPDATE write-back per event
  pgpump/batch    the pump through AppendBatch vs PublishAsync, 256 in flight,
                  and one UPDATE write-back per window
  pgpump/takeover time from terminating the drainer lock holder's session to
                  a standby pump holding the lock

The full run takes a few minutes; --quick uses smaller sizes (100k events for
the RSS line) and takes under a minute. A missed target is reported, not an
error: the exit status is 0 unless a measurement could not run. Run it on an
otherwise idle machine; other load skews the ratios.`,
	example:  `controlfeed bench --quick --out bench.json`,
	settings: []string{"quick", "only", "json", "out", "postgres-url", "join-events", "join-keys", "log-format", "log-level"},
}

func (m *Main) runBench(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "child" {
		// The RSS measurement's child process: not for direct use.
		return bench.ChildMain(ctx, args[1:], m.Stdout)
	}
	var s settings
	pos, err := benchCmd.parse(m, &s, args)
	if err != nil {
		return helpOK(err)
	}
	if len(pos) > 0 {
		return usageErrorf("controlfeed bench: unexpected argument %q (see controlfeed bench --help)", pos[0])
	}
	log, err := s.logger(m.Stderr)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("controlfeed bench: find this program to re-execute for the RSS measurement: %w", err)
	}
	cfg := &bench.Config{
		Quick:       s.Quick,
		Only:        onlyList(s.Only),
		PostgresURL: s.PostgresURL,
		JoinEvents:  s.JoinEvents,
		JoinKeys:    s.JoinKeys,
		Logger:      log,
		Exec: func(ctx context.Context, args []string) *exec.Cmd {
			return exec.CommandContext(ctx, exe, append([]string{"bench", "child"}, args...)...)
		},
	}
	rep, runErr := bench.Run(ctx, cfg)
	if s.JSON {
		err = rep.WriteJSON(m.Stdout)
	} else {
		err = rep.WriteTable(m.Stdout)
	}
	if err == nil && s.Out != "" {
		err = writeReportFile(s.Out, rep)
	}
	if runErr != nil {
		return runErr
	}
	return err
}

// writeReportFile writes rep as JSON to path, atomically.
func writeReportFile(path string, rep bench.Report) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("controlfeed bench: --out %s: %w", path, err)
	}
	if err := rep.WriteJSON(f); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("controlfeed bench: --out %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("controlfeed bench: --out %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("controlfeed bench: --out %s: %w", path, err)
	}
	return nil
}

// onlyList splits --only.
func onlyList(v string) []string {
	var out []string
	for p := range strings.SplitSeq(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
