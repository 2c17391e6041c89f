package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/fleet"
	"github.com/controlfeed/controlfeed/fleet/natsfleet"
	"github.com/controlfeed/controlfeed/internal/natsembed"
)

// BenchmarkFleet_1000Reporters runs 1,000 simulated nodes in this process,
// each a fleet.Reporter with the default debounce (1 s) and heartbeat
// (10 s) writing a realistic report (16 digest checkpoints, an application
// digest) to one embedded broker, every node changing every second (the
// worst case: a fleet that applies at least one event per second per
// node). It reports the broker load of the reports (reports/s and
// bytes/s, from the server's inbound counters over 5 s) and measures one
// "controlfeed fleet --json" against that fleet per iteration (ns/op).
// The reporters share 20 connections (50 nodes each).
//
//	flock /work/heavy.lock go test -run '^$' -bench Fleet_1000 -benchtime 10x ./cmd/controlfeed/
func BenchmarkFleet_1000Reporters(b *testing.B) {
	const nodes, conns = 1000, 20
	srv := natsembed.StartForTest(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := feed.NATSConfig{URLs: []string{srv.ClientURL()}}
	sink, err := natsfeed.NewSink(ctx, cfg, nil) // creates the feed stream, so fleet reads its head
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	producer, err := natsfleet.New(ctx, fleet.Config{Feed: feed.SourceConfig{NATS: cfg}, Create: true}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer producer.Close()

	start := time.Now()
	var wg sync.WaitGroup
	var size int
	for c := range conns {
		nc, err := nats.Connect(srv.ClientURL())
		if err != nil {
			b.Fatal(err)
		}
		defer nc.Close()
		st, err := natsfleet.New(ctx, fleet.Config{Feed: feed.SourceConfig{NATS: cfg}}, &natsfleet.Options{Conn: nc})
		if err != nil {
			b.Fatal(err)
		}
		for i := range nodes / conns {
			name := fmt.Sprintf("node-%04d", c*nodes/conns+i)
			snap := func(context.Context) (fleet.Report, error) { return simulatedReport(name, start), nil }
			if size == 0 {
				r, _ := snap(ctx)
				r.Format = fleet.Format
				enc, _ := fleet.Encode(r)
				size = len(enc)
			}
			rep, err := fleet.NewReporter(st, snap, nil)
			if err != nil {
				b.Fatal(err)
			}
			wg.Go(func() { rep.Run(ctx) })
		}
	}
	defer wg.Wait()
	defer cancel()

	waitFor(b, 60*time.Second, "every node's report", func() bool {
		es, err := producer.List(ctx)
		return err == nil && len(es) == nodes
	})
	v0, _ := srv.NATSServer().Varz(nil)
	t0 := time.Now()
	time.Sleep(5 * time.Second)
	v1, _ := srv.NATSServer().Varz(nil)
	secs := time.Since(t0).Seconds()

	env := []string{"CONTROLFEED_NATS_URL=" + srv.ClientURL(), "CONTROLFEED_FEED_SOURCE=jetstream"}
	m := &Main{Stdout: io.Discard, Stderr: io.Discard, Environ: func() []string { return env }}
	for b.Loop() {
		if err := m.Run(ctx, []string{"fleet", "--json"}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(v1.InMsgs-v0.InMsgs)/secs, "broker_in_msgs/s")
	b.ReportMetric(float64(v1.InBytes-v0.InBytes)/secs, "broker_in_bytes/s")
	b.ReportMetric(float64(size), "report_bytes")
}

// simulatedReport is a synced node's report whose cursor moves every
// second.
func simulatedReport(name string, start time.Time) fleet.Report {
	cur := uint64(time.Since(start)/time.Second) + 10_000
	h := cur
	var lag uint64
	r := fleet.Report{Node: name, Version: "(devel)", StartedAt: start.UTC(), State: "applying", Cursor: cur, Head: &h, Lag: &lag,
		Applied: int64(cur), StateDigest: fleet.Digest{Cursor: cur, Digest: fmt.Sprintf("sha256:%064x", cur)},
		AppDigest: &fleet.AppDigest{Cursor: cur, Digest: fmt.Sprintf("sha256:%064x", cur+1), At: time.Now().UTC()}}
	for i := range uint64(16) {
		c := (cur/100-i)*100 + 1
		r.DigestCheckpoints = append(r.DigestCheckpoints, fleet.Digest{Cursor: c, Digest: fmt.Sprintf("sha256:%064x", c)})
	}
	return r
}
