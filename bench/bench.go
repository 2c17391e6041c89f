// Package bench is controlfeed's benchmark harness: in one run it measures
// each path of the pipeline next to a raw baseline of the same work done
// directly on the same embedded NATS server and the same disk, and reports
// both figures, their ratio and the target the ratio is held to.
//
// # What is measured
//
//   - pump/sync: the outbox pump draining pre-filled rows through the
//     jetstream Sink's Append, one publish at a time, with the write-back, vs
//     jetstream.Publish with a Msg-Id of the same bodies (ratio >= 0.8).
//   - pump/batch: the same through the Sink's AppendBatch (the pump's
//     feed.BatchAppender path) vs PublishAsync with 256 in flight (>= 0.5).
//   - apply/catch-up: an applier with the kv handlers draining a pre-filled
//     stream (decode, artifact fetch and verify, handler, applied_events,
//     cursor, ack) vs inserting the same kv rows into SQLite in 100-row
//     transactions (>= 0.5).
//   - e2e/latency: producer commit to applied on each of 3 nodes at a fixed
//     rate vs publish, consume, commit one row and ack on 3 raw consumers
//     (p50 <= 2 ms, p99 <= 10 ms).
//   - e2e/latency-vs-durable-raw: the same controlfeed figures against a
//     second baseline, not the target's: the raw path with the producer's
//     durable write before each publish (SQLite commit, WAL fsync).
//   - file/append and file/poll: the file backend's durable Append vs a raw
//     temp-file + fsync + rename + directory fsync, and a Poll of 10 new
//     events on a 100k-event history vs on a 1k-event one (<= 2x).
//   - rss/catch-up: peak resident memory of a separate process catching up
//     on a 1M-event stream (<= 256 MiB); see Config.Exec and ChildMain.
//
// # Errors
//
// Run stops at the first measurement that fails (a server that does not
// start, a database error, a pipeline that does not converge within its
// deadline) and returns the error, naming the measurement. A missed target
// is not an error: it is reported with OK false.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Config sizes a run. A zero field selects the full-run default, or the
// quick one when Quick is set.
type Config struct {
	// Quick selects the small sizes meant for CI (the whole run takes well
	// under a minute on 2 vCPUs).
	Quick bool
	// Dir is where the temporary databases, stores and feeds are created (a
	// new directory inside it, removed at the end). Empty means os.TempDir().
	Dir string
	// Only, when not empty, runs only the measurements whose name starts
	// with one of these prefixes ("pump", "pgpump", "apply", "e2e", "file",
	// "rss", "sign", "join", "fanout").
	Only []string
	// PumpSyncEvents, PumpBatchEvents and ApplyEvents are the events per
	// throughput measurement. Defaults 20k, 100k, 100k (quick: 5k, 20k,
	// 20k).
	PumpSyncEvents, PumpBatchEvents, ApplyEvents int
	// E2ERate is the producer rate in events/s and E2EDuration how long it
	// produces. Defaults 1000/s for 5s (quick: 1000/s for 2s).
	E2ERate     int
	E2EDuration time.Duration
	// E2ENodes is the number of nodes. Default 3.
	E2ENodes int
	// FanoutNodes is the number of nodes of the fan-out measurement, which
	// runs the e2e measurement with E2ENodes and with FanoutNodes nodes on
	// one embedded server, side by side. Default 100 (quick: 30).
	FanoutNodes int
	// FileAppends is the number of durable file-backend appends. Default 500
	// (quick: 200).
	FileAppends int
	// FileHistory is the large history of the file-backend Poll
	// measurement, compared with a history of 1k events. Default 100k (also
	// when quick).
	FileHistory int
	// RSSEvents is the size of the catch-up whose peak memory is measured.
	// Default 1M (quick: 100k).
	RSSEvents int
	// JoinEvents and JoinKeys size the join measurement (a new node by
	// snapshot vs by replay). Defaults 1M events over 100k keys (quick:
	// 100k over 10k).
	JoinEvents, JoinKeys int
	// Exec returns the command that runs ChildMain with args in a new
	// process (a re-exec of the current binary). Nil skips the RSS
	// measurement.
	Exec func(ctx context.Context, args []string) *exec.Cmd
	// PostgresURL, when set, adds the pgpump measurements: the outbox pump
	// on this PostgreSQL server (pgx URL; the run creates schemas there and
	// drops them at the end) next to raw publish + UPDATE baselines, and
	// the drainer lock's takeover time. Empty skips them.
	PostgresURL string
	// Logger receives progress lines. Nil discards them.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	def := func(p *int, full, quick int) {
		if *p == 0 {
			*p = full
			if c.Quick {
				*p = quick
			}
		}
	}
	def(&c.PumpSyncEvents, 20_000, 5_000)
	def(&c.PumpBatchEvents, 100_000, 20_000)
	def(&c.ApplyEvents, 100_000, 20_000)
	def(&c.E2ERate, 1000, 1000)
	def(&c.E2ENodes, 3, 3)
	def(&c.FanoutNodes, 100, 30)
	def(&c.FileAppends, 500, 200)
	def(&c.FileHistory, 100_000, 100_000)
	def(&c.RSSEvents, 1_000_000, 100_000)
	def(&c.JoinEvents, 1_000_000, 100_000)
	def(&c.JoinKeys, 100_000, 10_000)
	if c.E2EDuration == 0 {
		c.E2EDuration = 5 * time.Second
		if c.Quick {
			c.E2EDuration = 2 * time.Second
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate rejects negative sizes and durations.
func (c *Config) Validate() error {
	for name, v := range map[string]int{"PumpSyncEvents": c.PumpSyncEvents, "PumpBatchEvents": c.PumpBatchEvents,
		"ApplyEvents": c.ApplyEvents, "E2ERate": c.E2ERate, "E2ENodes": c.E2ENodes, "FileAppends": c.FileAppends, "FileHistory": c.FileHistory, "RSSEvents": c.RSSEvents,
		"JoinEvents": c.JoinEvents, "JoinKeys": c.JoinKeys} {
		if v < 0 {
			return fmt.Errorf("bench: config: %s %d is negative", name, v)
		}
	}
	if c.E2EDuration < 0 {
		return fmt.Errorf("bench: config: E2EDuration %v is negative", c.E2EDuration)
	}
	return nil
}

// Result is one line of the report: a measured figure next to its baseline.
type Result struct {
	// Name identifies the measurement, e.g. "pump/sync".
	Name string `json:"name"`
	// Metric names the figure and its unit, e.g. "events/s" or "p99 ms".
	Metric string `json:"metric"`
	// Value is controlfeed's figure, Baseline the raw one (0 if none).
	Value    float64 `json:"value"`
	Baseline float64 `json:"baseline"`
	// Ratio is Value/Baseline (0 without a baseline).
	Ratio float64 `json:"ratio"`
	// Target describes the goal, e.g. "ratio >= 0.8" or "<= 2 ms"; empty
	// when the line is informational.
	Target string `json:"target,omitempty"`
	// OK reports whether the target was met (true when there is none).
	OK bool `json:"ok"`
	// Note adds context: sizes, what the baseline is.
	Note string `json:"note,omitempty"`
}

// Report is the outcome of Run.
type Report struct {
	// Quick is Config.Quick.
	Quick bool `json:"quick"`
	// GoVersion, GOOS/GOARCH, NumCPU describe the process that ran it.
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"`
	NumCPU    int    `json:"num_cpu"`
	// CPU is the model name from /proc/cpuinfo, when readable.
	CPU string `json:"cpu,omitempty"`
	// Started is when the run began; Elapsed how long it took.
	Started time.Time     `json:"started"`
	Elapsed time.Duration `json:"elapsed_ns"`
	// Results are in measurement order.
	Results []Result `json:"results"`
}

// Missed returns the results whose target was not met.
func (r Report) Missed() []Result {
	var out []Result
	for _, x := range r.Results {
		if !x.OK {
			out = append(out, x)
		}
	}
	return out
}

// WriteTable writes r as an aligned text table, one line per result, with
// the machine facts above it.
func (r Report) WriteTable(w io.Writer) error {
	mode := "full"
	if r.Quick {
		mode = "quick"
	}
	fmt.Fprintf(w, "controlfeed bench (%s) %s %s, %d CPU, %s; took %s\n", mode, r.GoVersion, r.Platform, r.NumCPU, r.CPU, r.Elapsed.Round(time.Second))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "measurement\tmetric\tcontrolfeed\traw baseline\tratio\ttarget\tok\t note")
	for _, x := range r.Results {
		base, ratio := "-", "-"
		if x.Baseline != 0 {
			base, ratio = fmtNum(x.Baseline), fmt.Sprintf("%.2f", x.Ratio)
		}
		ok := "yes"
		if !x.OK {
			ok = "NO"
		}
		if x.Target == "" {
			ok = ""
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t %s\n", x.Name, x.Metric, fmtNum(x.Value), base, ratio, x.Target, ok, x.Note)
	}
	return tw.Flush()
}

// WriteJSON writes r as indented JSON.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func fmtNum(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

// measurement is one step of a run.
type measurement struct {
	name string
	run  func(ctx context.Context, e *env) ([]Result, error)
}

var measurements = []measurement{
	{"pump", runPump},
	{"pgpump", runPgPump},
	{"apply", runApply},
	{"e2e", runE2E},
	{"file", runFile},
	{"rss", runRSS},
	{"sign", runSign},
	{"fanout", runFanout},
	{"join", runJoin},
}

// Run performs the measurements selected by cfg, one after another (never
// concurrently, so they do not compete for the CPUs), each on its own
// embedded NATS server and databases under a temporary directory that Run
// removes. It returns the report, or the first error with the results
// gathered so far. cfg may be nil. ctx cancels the run.
func Run(ctx context.Context, cfg *Config) (Report, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if err := c.Validate(); err != nil {
		return Report{}, err
	}
	c.setDefaults()
	rep := Report{Quick: c.Quick, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH,
		NumCPU: runtime.NumCPU(), CPU: cpuModel(), Started: time.Now()}
	// A wrong PostgreSQL URL fails the run before minutes of other
	// measurements, not after them.
	if c.PostgresURL != "" && selected(c.Only, "pgpump") {
		if err := pingPostgres(ctx, c.PostgresURL); err != nil {
			return rep, fmt.Errorf("bench: PostgreSQL (--postgres-url): %w; nothing was measured: fix the URL or leave it out", err)
		}
	}
	root, err := os.MkdirTemp(c.Dir, "controlfeed-bench-")
	if err != nil {
		return rep, fmt.Errorf("bench: create temporary directory in %q: %w", c.Dir, err)
	}
	defer os.RemoveAll(root)
	for _, m := range measurements {
		if !selected(c.Only, m.name) {
			continue
		}
		dir, err := os.MkdirTemp(root, m.name+"-")
		if err != nil {
			return rep, fmt.Errorf("bench: %s: %w", m.name, err)
		}
		c.Logger.Info("bench: measuring", "measurement", m.name)
		res, err := m.run(ctx, &env{cfg: &c, dir: dir, log: c.Logger.With("measurement", m.name)})
		rep.Results = append(rep.Results, res...)
		os.RemoveAll(dir)
		if err != nil {
			rep.Elapsed = time.Since(rep.Started)
			return rep, fmt.Errorf("bench: %s: %w", m.name, err)
		}
	}
	rep.Elapsed = time.Since(rep.Started)
	return rep, nil
}

func selected(only []string, name string) bool {
	if len(only) == 0 {
		return true
	}
	for _, o := range only {
		if strings.HasPrefix(name, o) || strings.HasPrefix(o, name) {
			return true
		}
	}
	return false
}

// env is what a measurement gets: the config and its own directory.
type env struct {
	cfg *Config
	dir string
	log *slog.Logger
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// ratioResult builds a throughput or latency Result. higherBetter selects
// whether minRatio is a floor on value/baseline.
func ratioResult(name, metric string, value, baseline, minRatio float64, note string) Result {
	r := Result{Name: name, Metric: metric, Value: value, Baseline: baseline, OK: true, Note: note}
	if baseline > 0 {
		r.Ratio = value / baseline
	}
	if minRatio > 0 {
		r.Target = fmt.Sprintf("ratio >= %.1f", minRatio)
		r.OK = r.Ratio >= minRatio
	}
	return r
}

var errNotConverged = errors.New("did not converge before the deadline")
