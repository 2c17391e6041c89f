package chaos_test

import (
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/internal/chaos"
)

var chaosDuration = flag.Duration("chaos.duration", 0, "length of the chaos fault phase (0 = CI-sized default, or CONTROLFEED_CHAOS_DURATION / CONTROLFEED_CHAOS_LONG=1 for 2h)")

// buildBinaries builds the controlfeed command and the chaos child program
// without -race (the processes under test need not be race-built; it keeps
// them fast).
func buildBinaries(t *testing.T) (controlfeed, self string) {
	t.Helper()
	dir := t.TempDir()
	for _, b := range []struct{ out, pkg string }{
		{"controlfeed", "github.com/controlfeed/controlfeed/cmd/controlfeed"},
		{"controlfeed-chaos", "github.com/controlfeed/controlfeed/cmd/controlfeed-chaos"},
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b.out), b.pkg)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b.pkg, err, out)
		}
	}
	return filepath.Join(dir, "controlfeed"), filepath.Join(dir, "controlfeed-chaos")
}

// runConfig returns the run's size: CI-sized by default, scaled to the
// requested duration in long mode.
func runConfig(t *testing.T) chaos.Config {
	d := *chaosDuration
	if v := os.Getenv("CONTROLFEED_CHAOS_DURATION"); d == 0 && v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("CONTROLFEED_CHAOS_DURATION=%q: %v", v, err)
		}
	}
	if d == 0 && os.Getenv("CONTROLFEED_CHAOS_LONG") == "1" {
		d = 2 * time.Hour
	}
	cfg := chaos.Config{DiskFull: true}
	if d > 0 {
		scale := float64(d) / float64(4*time.Minute)
		cfg.Duration = d
		cfg.Events = int(20000 * scale)
		cfg.BrokerRestarts = int(50 * scale)
		cfg.LongOutages = max(int(5*scale), 1)
		cfg.DuplicateDeliveries = int(10000 * scale)
		cfg.BadInputs = int(200 * scale)
		cfg.KillsPerPoint = int(20 * scale)
		cfg.PowerLosses = max(int(3*scale), 1)
		cfg.StoreFulls = max(int(3*scale), 1)
	}
	if v, err := strconv.Atoi(os.Getenv("CONTROLFEED_CHAOS_EVENTS")); err == nil && v > 0 {
		cfg.Events = v
	}
	if v, err := strconv.Atoi(os.Getenv("CONTROLFEED_CHAOS_WIPES")); err == nil && v > 0 {
		cfg.Wipes = v // "node wiped" faults (wipe.go)
	}
	if v, err := strconv.ParseUint(os.Getenv("CONTROLFEED_CHAOS_SEED"), 10, 64); err == nil && v > 0 {
		cfg.Seed = v // replay a failed run's choices (timing still differs)
	}
	return cfg
}

// TestChaos runs producer, broker and nodes as OS processes under kill -9 at
// every failure point and at random moments, broker restarts (some longer
// than the duplicate window), forced duplicate deliveries, bad inputs and a
// disk-full episode, then proves that every node applied every change
// exactly once, in order, and holds the producer's state. See
// docs/RELIABILITY.md.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos suite with OS processes; skipped with -short")
	}
	runChaos(t, runConfig(t), "CONTROLFEED_CHAOS_REPORT")
}

// TestChaos_ObjectStore is TestChaos with the broker's Object Store as the
// artifact store: the writer uploads into the bucket and the nodes fetch
// from it through every broker restart, stall and cut; corrupt artifacts
// are objects stored under a reference with other bytes, repaired by a
// re-put; the store-full episodes put the bucket at its byte limit. CI-sized:
// a minute with the JetStream run's faults scaled to it (without its
// disk-full episode) and 1,200 events: every upload and fetch waits out the
// broker's outages, so a quarter of that run's events would keep the faults
// going for its time limit. Scaled like it in long mode.
//
// It is also the signed run (Config.Signed): the pump signs, the nodes
// trust its key, and the bad inputs are forged events (unsigned, an
// untrusted key, a valid signature over altered fields; a replay of a signed
// event, passed as a duplicate), the others refused on every node with its own reason and passed
// with skip --security-override; and producer events a hostile broker drops
// or swaps (hostile.go), halted at with chain-gap on every node and applied
// after the operator's stream repair. The legitimate bad kinds (conflict,
// poison, missing and corrupt artifacts...) run in TestChaos.
func TestChaos_ObjectStore(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos suite with OS processes; skipped with -short")
	}
	cfg := runConfig(t)
	if cfg.Duration == 0 {
		cfg = chaos.Config{Duration: time.Minute, Events: 1200, BrokerRestarts: 12, LongOutages: 2,
			DuplicateDeliveries: 2500, BadInputs: 50, KillsPerPoint: 5, Stalls: 4, DupNames: 1, PowerLosses: 1, StoreFulls: 2, Seed: cfg.Seed}
	}
	cfg.Artifacts = chaos.ArtifactsJetStream
	cfg.Signed = os.Getenv("CONTROLFEED_CHAOS_UNSIGNED") != "1"
	cfg.HostileBroker = os.Getenv("CONTROLFEED_CHAOS_HOSTILE") != "0"
	runChaos(t, cfg, "CONTROLFEED_CHAOS_OBJECT_REPORT")
}

// TestChaos_FileFeed is TestChaos on the file feed: the same writer, pump,
// nodes and checker around a feed directory instead of a broker, with held
// feed locks in place of the broker's faults. CI-sized: a minute, 5,000
// events (a quarter of the JetStream run), scaled like it in long mode.
func TestChaos_FileFeed(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos suite with OS processes; skipped with -short")
	}
	cfg := runConfig(t)
	if cfg.Duration == 0 {
		cfg.Duration, cfg.Events, cfg.PowerLosses, cfg.StoreFulls, cfg.Stalls, cfg.FeedLocks = time.Minute, 5000, 1, 1, 4, 4
		if cfg.Wipes == 0 {
			cfg.Wipes = 2 // "node wiped": the node must rejoin from node1's periodic snapshot
		}
	} else {
		cfg.FeedLocks = max(int(8*float64(cfg.Duration)/float64(4*time.Minute)), 1)
	}
	cfg.Feed = chaos.FeedFile
	runChaos(t, cfg, "CONTROLFEED_CHAOS_FILE_REPORT")
}

// runChaos performs one run of cfg and fails t on any problem; the report
// goes to the file named by the environment variable reportEnv, if set.
func runChaos(t *testing.T, cfg chaos.Config, reportEnv string) {
	bin, self := buildBinaries(t)
	cfg.Binary, cfg.Self = bin, []string{self}
	cfg.Dir = t.TempDir()
	if os.Getenv("CONTROLFEED_CHAOS_KEEP") == "1" {
		d, err := os.MkdirTemp("", "controlfeed-chaos-")
		if err != nil {
			t.Fatal(err)
		}
		cfg.Dir = d
		t.Logf("keeping the run's files in %s", d)
	}
	cfg.Log = testWriter{t}
	rep, err := chaos.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", rep)
	// go test ./... shows nothing of a passing package, so CI asks for the
	// counts in a file it prints afterwards.
	if path := os.Getenv(reportEnv); path != "" {
		if err := os.WriteFile(path, []byte(rep.String()), 0o644); err != nil {
			t.Errorf("write the report to %s=%s: %v", reportEnv, path, err)
		}
	}
	if !rep.OK() {
		for _, p := range []string{"pump", "node1", "node2", "node3", "writer", "broker"} {
			b, _ := os.ReadFile(filepath.Join(cfg.Dir, p+".log"))
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("--- %s log (tail) ---\n%s", p, b)
		}
		t.Fatalf("chaos run failed: %d problems (seed %d)", len(rep.Problems), rep.Seed)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}
