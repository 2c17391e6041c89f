package node_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/controlfeed/controlfeed/applier"
	_ "github.com/controlfeed/controlfeed/artifact/filestore"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	_ "github.com/controlfeed/controlfeed/feed/filesource"
	_ "github.com/controlfeed/controlfeed/feed/nop"
	"github.com/controlfeed/controlfeed/fleet/filefleet"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/kv"
)

// start opens cfg and runs it until the test ends.
func start(t *testing.T, cfg *node.Config) *node.Node {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n, err := node.Open(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := n.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return n
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func get(t *testing.T, n *node.Node, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + n.Addr().String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func status(t *testing.T, n *node.Node) node.Status {
	t.Helper()
	s, err := n.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNode_ProducerToNode(t *testing.T) {
	dir := t.TempDir()
	feedDir, artDir := filepath.Join(dir, "feed"), filepath.Join(dir, "art")
	fcfg := feed.SourceConfig{FileDir: feedDir}
	prod := start(t, &node.Config{DB: filepath.Join(dir, "p.db"), FeedSink: "file", Feed: fcfg,
		Artifact: artifactDir(artDir), Listen: "127.0.0.1:0"})
	n1 := start(t, &node.Config{DB: filepath.Join(dir, "n1.db"), FeedSource: "file", Feed: fcfg,
		Artifact: artifactDir(artDir), Listen: "127.0.0.1:0", NodeName: "n1", PollInterval: 10 * time.Millisecond})

	ctx := context.Background()
	pstore := prod.Store()
	for _, k := range []string{"a", "b", "c"} {
		if _, err := kv.Put(ctx, prod.DB(), pstore, k, []byte("v-"+k)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := kv.Delete(ctx, prod.DB(), "b"); err != nil {
		t.Fatal(err)
	}
	prod.Pump().Notify()
	waitFor(t, "n1 to apply 4 events", func() bool { s := status(t, n1); return s.Cursor == 4 && s.Lag != nil && *s.Lag == 0 })
	// The pump records what it published after the broker accepted it, so
	// a node may apply an event before the producer's outbox shows it.
	waitFor(t, "the producer to record 4 published events", func() bool { return status(t, prod).OutboxPending == 0 })

	want, _ := kv.Digest(ctx, prod.DB())
	if got, _ := kv.Digest(ctx, n1.DB()); got != want {
		t.Errorf("node digest %s != producer digest %s", got, want)
	}
	ps := status(t, prod)
	if ps.OutboxPending != 0 || ps.Process == nil || ps.Process.Published != 4 {
		t.Errorf("producer status: %+v / %+v", ps, ps.Process)
	}

	code, body := get(t, n1, "/healthz")
	if code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	code, body = get(t, n1, "/v1/status")
	var js map[string]any
	if err := json.Unmarshal([]byte(body), &js); code != 200 || err != nil {
		t.Fatalf("/v1/status = %d %q (%v)", code, body, err)
	}
	if js["node"] != "n1" || js["cursor"] != float64(4) || js["head"] != float64(4) || js["lag"] != float64(0) || js["applied"] != float64(4) {
		t.Errorf("/v1/status = %s", body)
	}
	code, body = get(t, n1, "/metrics")
	for _, m := range []string{"controlfeed_cursor 4", "controlfeed_lag 0", "controlfeed_outbox_pending 0", "controlfeed_outbox_dead 0",
		"controlfeed_published_total 0", "controlfeed_publish_errors_total 0", "controlfeed_applied_total 4", "controlfeed_halted 0"} {
		if code != 200 || !strings.Contains(body, "\n"+m+"\n") {
			t.Errorf("/metrics (%d) lacks %q:\n%s", code, m, body)
		}
	}
	_, body = get(t, prod, "/metrics")
	if !strings.Contains(body, "\ncontrolfeed_published_total 4\n") {
		t.Errorf("producer /metrics lacks published_total 4:\n%s", body)
	}
	checkRegistry(t, prod, "controlfeed_publish_duration_seconds")
	checkRegistry(t, n1, "controlfeed_apply_duration_seconds", "controlfeed_event_age_at_apply_seconds")
	if _, body = get(t, n1, "/metrics"); !strings.Contains(body, "\ncontrolfeed_event_age_at_apply_seconds_count 4\n") {
		t.Errorf("node /metrics: event age not observed for the 4 applied events:\n%s", body)
	}
}

// checkRegistry lints what n's /metrics serves (testutil.GatherAndLint: the
// status metrics, the histograms, the Go runtime and process collectors)
// and checks that it holds the runtime collectors and histograms, each
// observed at least once.
func checkRegistry(t *testing.T, n *node.Node, histograms ...string) {
	t.Helper()
	problems, err := testutil.GatherAndLint(n.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metrics lint: %s: %s", p.Metric, p.Text)
	}
	mfs, err := n.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf
	}
	for _, name := range []string{"controlfeed_cursor", "go_goroutines", "process_start_time_seconds"} {
		if got[name] == nil {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	for _, name := range histograms {
		mf := got[name]
		if mf == nil || mf.GetType() != dto.MetricType_HISTOGRAM || mf.GetMetric()[0].GetHistogram().GetSampleCount() == 0 {
			t.Errorf("/metrics: histogram %s missing or never observed: %v", name, mf)
		}
	}
}

func TestNode_HaltAndSkip(t *testing.T) {
	dir := t.TempDir()
	fcfg := feed.SourceConfig{FileDir: filepath.Join(dir, "feed")}
	sink, err := feed.OpenSink("file", fcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.(io.Closer).Close()
	ctx := context.Background()
	bad := controlevent.Event{EventID: "evt-unknown-type", Type: "no.such.type", CreatedAt: time.Now()}
	if _, err := sink.Append(ctx, bad); err != nil {
		t.Fatal(err)
	}
	n := start(t, &node.Config{DB: filepath.Join(dir, "n.db"), FeedSource: "file", Feed: fcfg, Listen: "127.0.0.1:0"})
	waitFor(t, "the node to halt", func() bool { return status(t, n).Halted != nil })

	code, body := get(t, n, "/healthz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "evt-unknown-type") {
		t.Errorf("/healthz while halted = %d %q", code, body)
	}
	if _, body = get(t, n, "/metrics"); !strings.Contains(body, "\ncontrolfeed_halted 1\n") {
		t.Errorf("/metrics while halted lacks controlfeed_halted 1:\n%s", body)
	}
	stored, err := node.ReadStatus(ctx, n.DB())
	if err != nil || stored.Halted == nil || stored.Halted.EventID != "evt-unknown-type" {
		t.Errorf("ReadStatus while halted: %+v, %v", stored.Halted, err)
	}

	if err := applier.Skip(ctx, n.DB(), "evt-unknown-type"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the node to move past the skipped event", func() bool { s := status(t, n); return s.Cursor == 1 && s.Halted == nil })
	if code, body = get(t, n, "/healthz"); code != 200 {
		t.Errorf("/healthz after skip = %d %q", code, body)
	}
	if s := status(t, n); s.Skipped != 1 || s.Applied != 0 {
		t.Errorf("after skip: applied %d skipped %d, want 0 1", s.Applied, s.Skipped)
	}
}

func TestOpen_Errors(t *testing.T) {
	ctx := context.Background()
	if _, err := node.Open(ctx, &node.Config{}); err == nil || !strings.Contains(err.Error(), "DB") {
		t.Errorf("Open without DB: %v", err)
	}
	db := filepath.Join(t.TempDir(), "n.db")
	_, err := node.Open(ctx, &node.Config{DB: db, FeedSource: "carrier-pigeon"})
	if err == nil || !strings.Contains(err.Error(), "carrier-pigeon") || !strings.Contains(err.Error(), "available: file, ") || !strings.Contains(err.Error(), "nop") {
		t.Errorf("unknown source: %v", err)
	}
	_, err = node.Open(ctx, &node.Config{DB: db, FeedSink: "file"})
	if err == nil {
		t.Error("file sink without a directory opened")
	}
	busy := start(t, &node.Config{DB: db, Listen: "127.0.0.1:0"})
	_, err = node.Open(ctx, &node.Config{DB: filepath.Join(t.TempDir(), "m.db"), Listen: busy.Addr().String()})
	if err == nil || !strings.Contains(err.Error(), "listen") {
		t.Errorf("busy port: %v", err)
	}
}

// With a ListenToken, an unhealthy node's /healthz answers 503 to anyone
// (probes need no token) but names the halted event only to a request that
// carries the token; /v1/status needs it.
func TestNode_ListenTokenHidesReasons(t *testing.T) {
	const token = "0123456789abcdef0123"
	dir := t.TempDir()
	fcfg := feed.SourceConfig{FileDir: filepath.Join(dir, "feed")}
	sink, err := feed.OpenSink("file", fcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.(io.Closer).Close()
	if _, err := sink.Append(context.Background(), controlevent.Event{EventID: "evt-secret-name", Type: "no.such.type", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	n := start(t, &node.Config{DB: filepath.Join(dir, "n.db"), FeedSource: "file", Feed: fcfg, Listen: ":0", ListenToken: token})
	if host, _, _ := net.SplitHostPort(n.Addr().String()); host != "127.0.0.1" {
		t.Errorf("Listen \":0\" bound %s, want loopback", n.Addr())
	}
	waitFor(t, "the node to halt", func() bool { return status(t, n).Halted != nil })
	do := func(path, tok string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+n.Addr().String()+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "bearer "+tok) // the scheme is case-insensitive
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := do("/healthz", ""); code != http.StatusServiceUnavailable || strings.Contains(body, "evt-secret-name") {
		t.Errorf("/healthz without token = %d %q, want 503 without reasons", code, body)
	}
	if code, body := do("/healthz", token); code != http.StatusServiceUnavailable || !strings.Contains(body, "evt-secret-name") {
		t.Errorf("/healthz with token = %d %q, want 503 with the reason", code, body)
	}
	if code, _ := do("/v1/status", ""); code != http.StatusUnauthorized {
		t.Errorf("/v1/status without token = %d, want 401", code)
	}
	if code, body := do("/v1/status", token); code != 200 || !strings.Contains(body, "evt-secret-name") {
		t.Errorf("/v1/status with token = %d %q", code, body)
	}
}

// Two nodes that applied the same events show the same state digest and
// application digest at the same cursor in /v1/status; a local edit of one
// node's table changes its application digest only.
func TestNode_Digests(t *testing.T) {
	dir := t.TempDir()
	feedDir, artDir := filepath.Join(dir, "feed"), filepath.Join(dir, "art")
	fcfg := feed.SourceConfig{FileDir: feedDir}
	prod := start(t, &node.Config{DB: filepath.Join(dir, "p.db"), FeedSink: "file", Feed: fcfg, Artifact: artifactDir(artDir)})
	var nodes []*node.Node
	for _, name := range []string{"n1", "n2"} {
		nodes = append(nodes, start(t, &node.Config{DB: filepath.Join(dir, name+".db"), FeedSource: "file", Feed: fcfg,
			Artifact: artifactDir(artDir), Listen: "127.0.0.1:0", NodeName: name, PollInterval: 10 * time.Millisecond,
			AppDigestInterval: time.Millisecond}))
	}
	ctx := context.Background()
	for _, k := range []string{"a", "b", "c"} {
		if _, err := kv.Put(ctx, prod.DB(), prod.Store(), k, []byte("v-"+k)); err != nil {
			t.Fatal(err)
		}
	}
	prod.Pump().Notify()
	type digests struct {
		StateDigest node.Digest     `json:"state_digest"`
		AppDigest   *node.AppDigest `json:"app_digest"`
	}
	read := func(n *node.Node) digests {
		_, body := get(t, n, "/v1/status")
		var d digests
		if err := json.Unmarshal([]byte(body), &d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	var d1, d2 digests
	waitFor(t, "both nodes at cursor 3 with their digests", func() bool {
		d1, d2 = read(nodes[0]), read(nodes[1])
		return d1.StateDigest.Cursor == 3 && d2.StateDigest.Cursor == 3 && d1.AppDigest != nil && d2.AppDigest != nil &&
			d1.AppDigest.Cursor == 3 && d2.AppDigest.Cursor == 3
	})
	if d1.StateDigest != d2.StateDigest || d1.StateDigest.Digest == applier.ZeroStateDigest {
		t.Errorf("state digests differ at the same cursor: %+v vs %+v", d1.StateDigest, d2.StateDigest)
	}
	want, _ := kv.Digest(ctx, prod.DB())
	if d1.AppDigest.Digest != want || d2.AppDigest.Digest != want {
		t.Errorf("app digests %s, %s; the producer's table %s", d1.AppDigest.Digest, d2.AppDigest.Digest, want)
	}
	if _, err := nodes[1].DB().Exec(`UPDATE controlfeed_kv SET value = X'00' WHERE key = 'b'`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "n2's app digest to show the edit", func() bool { return read(nodes[1]).AppDigest.Digest != want })
	if got := read(nodes[1]); got.StateDigest != d1.StateDigest {
		t.Errorf("a local edit changed the state digest: %+v", got.StateDigest)
	}
}

// A process whose database cannot be read (here: closed under it; in
// production a PostgreSQL server that is down) still answers /v1/status and
// /metrics, with the database's part as last read, and /healthz says why.
func TestNode_DatabaseUnreadable(t *testing.T) {
	dir := t.TempDir()
	fcfg := feed.SourceConfig{FileDir: filepath.Join(dir, "feed")}
	prod := start(t, &node.Config{DB: filepath.Join(dir, "p.db"), FeedSink: "file", Feed: fcfg,
		Artifact: artifactDir(filepath.Join(dir, "art")), Listen: "127.0.0.1:0"})
	if _, err := kv.Put(context.Background(), prod.DB(), prod.Store(), "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	prod.Pump().Notify()
	waitFor(t, "the event published", func() bool { return prod.Pump().Stats().Published == 1 })
	if code, body := get(t, prod, "/v1/status"); code != 200 || strings.Contains(body, "database_error") {
		t.Fatalf("/v1/status = %d %s", code, body)
	}
	prod.DB().Close()
	code, body := get(t, prod, "/v1/status")
	if code != 200 || !strings.Contains(body, `"database_error"`) {
		t.Fatalf("/v1/status with the database unreadable = %d %s", code, body)
	}
	if code, body := get(t, prod, "/metrics"); code != 200 || !strings.Contains(body, "\ncontrolfeed_database_unreadable 1\n") {
		t.Fatalf("/metrics with the database unreadable = %d\n%s", code, body)
	}
	if code, body := get(t, prod, "/healthz"); code != 503 || !strings.Contains(body, "the database cannot be read") {
		t.Fatalf("/healthz = %d %s", code, body)
	}
}

// TestNode_ReporterMetrics: /metrics counts the fleet reports a node wrote
// and, once its report store refuses writes (the reports directory
// replaced by a file), the failures, so that a node the fleet sees as
// stale can be alerted on from itself; the output stays lint-clean.
func TestNode_ReporterMetrics(t *testing.T) {
	dir := t.TempDir()
	feedDir := filepath.Join(dir, "feed")
	if err := os.MkdirAll(feedDir, 0o755); err != nil {
		t.Fatal(err)
	}
	n := start(t, &node.Config{DB: filepath.Join(dir, "n.db"), FeedSource: "file", Feed: feed.SourceConfig{FileDir: feedDir},
		Listen: "127.0.0.1:0", NodeName: "n1", PollInterval: 10 * time.Millisecond,
		FleetReports: true, FleetDebounce: 20 * time.Millisecond, FleetHeartbeat: 50 * time.Millisecond})
	metric := func(name string) float64 {
		_, body := get(t, n, "/metrics")
		for _, line := range strings.Split(body, "\n") {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("%s: %v", line, err)
				}
				return f
			}
		}
		t.Fatalf("/metrics lacks %s:\n%s", name, body)
		return 0
	}
	waitFor(t, "a fleet report written", func() bool { return metric("controlfeed_fleet_reports_total") >= 1 })
	if ts := metric("controlfeed_fleet_report_last_success_timestamp_seconds"); ts < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last success timestamp %v, want within the last minute", ts)
	}
	if f := metric("controlfeed_fleet_report_failures_total"); f != 0 {
		t.Errorf("failures before the store broke: %v", f)
	}
	// The reporter may recreate the directory between the removal and the
	// write: repeat until the file is in its place.
	reports := filepath.Join(feedDir, filefleet.Dir)
	waitFor(t, "the reports directory replaced by a file", func() bool {
		if err := os.RemoveAll(reports); err != nil {
			t.Fatal(err)
		}
		return os.WriteFile(reports, []byte("not a directory"), 0o644) == nil
	})
	waitFor(t, "a failed fleet report counted", func() bool { return metric("controlfeed_fleet_report_failures_total") >= 1 })
	checkRegistry(t, n)
}
