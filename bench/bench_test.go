package bench_test

import (
	"context"
	"github.com/controlfeed/controlfeed/internal/pgtest"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/bench"
)

// childEnv makes the test binary act as the RSS measurement's child.
const childEnv = "CONTROLFEED_BENCH_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		if err := bench.ChildMain(context.Background(), os.Args[1:], os.Stdout); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// reexec runs this test binary as the child.
func reexec(ctx context.Context, args []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	return cmd
}

// TestRun_Tiny runs every measurement at toy sizes: the harness must
// complete, measure both sides of every line, and apply every event (each
// measurement checks its own outcome: rows published, kv rows applied,
// every node reaching every event). It asserts no speed.
func TestRun_Tiny(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := bench.Run(ctx, &bench.Config{
		Dir: t.TempDir(), PumpSyncEvents: 200, PumpBatchEvents: 600, ApplyEvents: 700,
		E2ERate: 200, E2EDuration: 500 * time.Millisecond, E2ENodes: 2, FanoutNodes: 4,
		FileAppends: 10, FileHistory: 2000, RSSEvents: 1500, JoinEvents: 1500, JoinKeys: 100, Exec: reexec,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	if err := rep.WriteTable(&sb); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + sb.String())
	want := map[string]int{"pump/sync": 1, "pump/batch": 1, "apply/catch-up": 1, "e2e/latency": 4, "e2e/latency-vs-durable-raw": 4, "file/append": 1, "file/poll": 1, "rss/catch-up": 2, "join/replay": 2, "join/snapshot": 2, "fanout/latency": 4, "sign/pump": 1, "sign/catch-up": 1}
	got := map[string]int{}
	for _, r := range rep.Results {
		got[r.Name]++
		if r.Value <= 0 {
			t.Errorf("%s %s: value %v, want > 0", r.Name, r.Metric, r.Value)
		}
		if r.Name != "rss/catch-up" && r.Name != "join/replay" && r.Baseline <= 0 {
			t.Errorf("%s %s: baseline %v, want > 0", r.Name, r.Metric, r.Baseline)
		}
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%d results named %s, want %d", got[k], k, v)
		}
	}
	for _, r := range rep.Results {
		if r.Name == "rss/catch-up" && r.Metric == "peak RSS MiB" && (r.Value < 5 || r.Value > 4096) {
			t.Errorf("child peak RSS %v MiB is implausible: was it read from the child?", r.Value)
		}
	}
}

func TestConfig_Validate(t *testing.T) {
	if _, err := bench.Run(context.Background(), &bench.Config{ApplyEvents: -1}); err == nil || !strings.Contains(err.Error(), "ApplyEvents") {
		t.Fatalf("Run with negative ApplyEvents = %v, want an error naming it", err)
	}
}

// benchOnly runs the quick harness restricted to one measurement and
// reports each result as metrics (value and ratio).
func benchOnly(b *testing.B, only string) {
	var rep bench.Report
	for b.Loop() {
		var err error
		rep, err = bench.Run(b.Context(), &bench.Config{Quick: true, Dir: b.TempDir(), Only: []string{only}, Exec: reexec})
		if err != nil {
			b.Fatal(err)
		}
	}
	for _, r := range rep.Results {
		unit := strings.ReplaceAll(r.Name+"/"+r.Metric, " ", "_")
		b.ReportMetric(r.Value, unit)
		if r.Baseline > 0 {
			b.ReportMetric(r.Ratio, strings.ReplaceAll(r.Name+"/"+r.Metric+"/ratio", " ", "_"))
		}
	}
}

func BenchmarkPump(b *testing.B)   { benchOnly(b, "pump") }
func BenchmarkApply(b *testing.B)  { benchOnly(b, "apply") }
func BenchmarkE2E(b *testing.B)    { benchOnly(b, "e2e") }
func BenchmarkFile(b *testing.B)   { benchOnly(b, "file") }
func BenchmarkRSS(b *testing.B)    { benchOnly(b, "rss") }
func BenchmarkSign(b *testing.B)   { benchOnly(b, "sign") }
func BenchmarkFanout(b *testing.B) { benchOnly(b, "fanout") }
func BenchmarkJoin(b *testing.B)   { benchOnly(b, "join") }

// A PostgreSQL URL that does not answer fails the run at once, before any
// measurement.
func TestRun_BadPostgresURLFailsFirst(t *testing.T) {
	rep, err := bench.Run(context.Background(), &bench.Config{Quick: true, Dir: t.TempDir(), PostgresURL: "postgres://nobody@127.0.0.1:1/x?connect_timeout=2"})
	if err == nil || !strings.Contains(err.Error(), "--postgres-url") {
		t.Fatalf("Run = %v, want an error naming --postgres-url", err)
	}
	if len(rep.Results) != 0 {
		t.Fatalf("Run measured %d results before failing on the URL", len(rep.Results))
	}
}

// The pgpump lines run end to end on a real PostgreSQL at a tiny size (a
// check of the code, not a measurement): three lines, the ratios from the
// medians of the alternating passes named in their notes.
func TestRun_PgPumpSmall(t *testing.T) {
	u := pgtest.URL(t)
	rep, err := bench.Run(context.Background(), &bench.Config{Quick: true, Dir: t.TempDir(), PostgresURL: u,
		Only: []string{"pgpump"}, PumpSyncEvents: 60, PumpBatchEvents: 600})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range rep.Results {
		names = append(names, r.Name)
		if strings.HasPrefix(r.Name, "pgpump/sync") || strings.HasPrefix(r.Name, "pgpump/batch") {
			if r.Value <= 0 || r.Baseline <= 0 || !strings.Contains(r.Note, "medians of 3 alternating passes") {
				t.Errorf("%s = %+v", r.Name, r)
			}
		}
	}
	if strings.Join(names, ",") != "pgpump/sync,pgpump/batch,pgpump/takeover" {
		t.Errorf("results %v", names)
	}
}
