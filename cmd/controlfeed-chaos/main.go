// Command controlfeed-chaos runs the crash, outage, duplicate and bad-input
// suite of package internal/chaos by hand: a broker, a writer, a pump and
// the nodes as OS processes, killed and disturbed for a while, then checked.
// It prints progress, the counts and a verdict line, and exits 1 if the run
// found a problem.
//
//	go build -o /tmp/controlfeed ./cmd/controlfeed
//	go build -o /tmp/controlfeed-chaos ./cmd/controlfeed-chaos
//	/tmp/controlfeed-chaos -binary /tmp/controlfeed -duration 2h -events 2000000
//	/tmp/controlfeed-chaos -binary /tmp/controlfeed -brokers 3 -duration 30m -events 30000
//
// The same binary is the harness's child processes (the broker and the
// writer): the harness re-executes it with CHAOS_CHILD set.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/controlfeed/controlfeed/internal/chaos"
)

func main() {
	if ran, err := chaos.MaybeChild(os.Args[1:]); ran {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "controlfeed-chaos:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg chaos.Config
	fs := flag.NewFlagSet("controlfeed-chaos", flag.ExitOnError)
	fs.StringVar(&cfg.Binary, "binary", "", "path of the controlfeed `BINARY` to run as pump and nodes (required)")
	fs.StringVar(&cfg.Dir, "dir", "", "working `DIR` for databases, stores and logs (default: a new temporary directory, kept)")
	fs.IntVar(&cfg.Events, "events", 20000, "producer changes to write (`N`)")
	fs.DurationVar(&cfg.Duration, "duration", 4*time.Minute, "length of the fault phase (`DURATION`); targets scale with it")
	fs.IntVar(&cfg.Nodes, "nodes", 3, "fleet nodes (`N`)")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "`SEED` of the harness's choices (0 = from the clock)")
	fs.StringVar(&cfg.Feed, "feed", chaos.FeedJetStream, "feed backend under test (`NAME`): jetstream (a broker with its restarts, cuts, duplicates, bad inputs and duplicate node names) or file (a feed directory with held feed locks)")
	fs.StringVar(&cfg.Artifacts, "artifacts", chaos.ArtifactsFile, "artifact store under test (`NAME`): file (the file store, filled through a tmpfs) or jetstream (the broker's Object Store, filled to its byte limit; jetstream feed only)")
	fs.IntVar(&cfg.Brokers, "brokers", 1, "broker processes (`N`): 1, or 3 for a NATS cluster of controlfeed nats-server processes with an R3 stream and bucket, leader kills and quorum losses (jetstream feed and artifact store; -artifacts is set to jetstream)")
	fs.BoolVar(&cfg.Signed, "signed", false, "signed run: the pump signs, the nodes trust its key, and the bad inputs are forged events (unsigned, untrusted key, altered fields, replay) and producer events the broker drops or swaps, each refused with its own security reason and passed with skip --security-override or, for dropped and swapped, applied after the operator's stream repair (jetstream feed, 1 broker)")
	fs.BoolVar(&cfg.HostileBroker, "hostile-broker", true, "with -signed: the broker also drops or swaps producer events (its own signed events, deleted or re-appended out of order); -hostile-broker=false leaves only the forged kinds")
	diskFull := fs.Bool("disk-full", true, "run the disk-full episode on the last node (tmpfs if mountable, else a failure point)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: controlfeed-chaos -binary CONTROLFEED [flags]

Runs controlfeed's crash, outage, duplicate and bad-input suite by hand: a
NATS broker, a writer, a pump and the nodes as OS processes, SIGKILLed and
restarted at random and at named failure points for -duration, then checks
that nothing was lost, applied twice or out of order and that every node
equals the producer. Prints progress on stderr, then the counts and a
verdict; exits 1 if the run found a problem. See docs/RELIABILITY.md.

Flags:
`)
		fs.PrintDefaults()
	}
	fs.Parse(os.Args[1:])
	if cfg.Brokers != 1 && cfg.Brokers != 3 {
		return fmt.Errorf("-brokers %d: want 1 or 3", cfg.Brokers)
	}
	if cfg.Brokers == 3 {
		if cfg.Feed != chaos.FeedJetStream {
			return fmt.Errorf("-brokers 3 with -feed %s: a cluster run uses the jetstream feed", cfg.Feed)
		}
		cfg.Artifacts = chaos.ArtifactsJetStream
	}
	if cfg.Feed != chaos.FeedJetStream && cfg.Feed != chaos.FeedFile {
		return fmt.Errorf("-feed %q: want %s or %s", cfg.Feed, chaos.FeedJetStream, chaos.FeedFile)
	}
	if cfg.Artifacts != chaos.ArtifactsFile && (cfg.Artifacts != chaos.ArtifactsJetStream || cfg.Feed != chaos.FeedJetStream) {
		return fmt.Errorf("-artifacts %q with -feed %s: want %s, or %s with -feed %s", cfg.Artifacts, cfg.Feed, chaos.ArtifactsFile, chaos.ArtifactsJetStream, chaos.FeedJetStream)
	}
	if cfg.Binary == "" {
		return fmt.Errorf("-binary is required (go build -o /tmp/controlfeed ./cmd/controlfeed)")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cfg.Self = []string{self}
	if cfg.Dir == "" {
		if cfg.Dir, err = os.MkdirTemp("", "controlfeed-chaos-"); err != nil {
			return err
		}
	}
	cfg.DiskFull = *diskFull
	scale := float64(cfg.Duration) / float64(4*time.Minute)
	cfg.BrokerRestarts = max(int(50*scale), 5)
	cfg.LongOutages = max(int(5*scale), 1)
	cfg.DuplicateDeliveries = max(int(10000*scale), 100)
	cfg.BadInputs = max(int(200*scale), 10)
	cfg.KillsPerPoint = max(int(20*scale), 5)
	cfg.PowerLosses = max(int(3*scale), 1)
	cfg.StoreFulls = max(int(3*scale), 1)
	cfg.FeedLocks = max(int(8*scale), 1)
	if cfg.Brokers == 3 {
		cfg.Cluster = chaos.ScaledClusterConfig(cfg.Duration)
		cfg.DiskFull = false
	}
	cfg.Log = os.Stderr
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := chaos.Run(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Print(rep)
	fmt.Printf("logs and databases in %s\n", cfg.Dir)
	if !rep.OK() {
		os.Exit(1)
	}
	return nil
}
