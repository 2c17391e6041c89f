// Command controlfeed runs a controlfeed node or producer, publishes
// key/value changes, shows a node's status, tails a feed, skips a halted
// event, prunes a file feed and takes, publishes and restores snapshots of
// a node's database. Run "controlfeed --help" for the commands and "controlfeed COMMAND
// --help" for each command's flags and environment variables.
package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/controlfeed/controlfeed/internal/node"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := &Main{
		Stdin:   os.Stdin,
		Stdout:  os.Stdout,
		Stderr:  os.Stderr,
		Environ: os.Environ,
	}
	err := m.Run(ctx, os.Args[1:])
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode prints err and maps it to the process exit status: 0 for success,
// 2 for a usage error, 1 for anything else.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	msg := strings.TrimPrefix(node.RedactText(err.Error()), "controlfeed: ")
	if !strings.HasPrefix(msg, "controlfeed ") { // "controlfeed serve: ..." names itself
		msg = "controlfeed: " + msg
	}
	fmt.Fprintln(stderr, msg)
	var ue *usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// Main is the controlfeed program, with its process environment injected so
// that tests run it in-process. The zero value reads nothing and discards
// output.
type Main struct {
	// Stdin is read by "kv put KEY -".
	Stdin io.Reader
	// Stdout receives command output and help.
	Stdout io.Writer
	// Stderr receives logs.
	Stderr io.Writer
	// Environ returns the environment as "KEY=value" strings (os.Environ);
	// nil means an empty environment.
	Environ func() []string
}

// Run runs the command line args (without the program name) until it
// finishes or ctx is done. "--help" anywhere prints help and returns nil.
// Errors in the command line or the environment are returned as usage
// errors. Run never exits the process.
func (m *Main) Run(ctx context.Context, args []string) error {
	if m.Stdin == nil {
		m.Stdin = strings.NewReader("")
	}
	if m.Stdout == nil {
		m.Stdout = io.Discard
	}
	if m.Stderr == nil {
		m.Stderr = io.Discard
	}
	if len(args) == 0 {
		m.writeHelp()
		return usageErrorf("no command given")
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 && args[0] == "help" {
			return m.Run(ctx, append(args[1:], "--help"))
		}
		m.writeHelp()
		return nil
	}
	if err := checkEnv(m.environ()); err != nil {
		return err
	}
	switch args[0] {
	case "serve":
		return m.runServe(ctx, args[1:])
	case "kv":
		return m.runKV(ctx, args[1:])
	case "status":
		return m.runStatus(ctx, args[1:])
	case "tail":
		return m.runTail(ctx, args[1:])
	case "skip":
		return m.runSkip(ctx, args[1:])
	case "prune":
		return m.runPrune(ctx, args[1:])
	case "nats-server":
		return m.runNATSServer(ctx, args[1:])
	case "demo":
		return m.runDemo(ctx, args[1:])
	case "bench":
		return m.runBench(ctx, args[1:])
	case "keys":
		return m.runKeys(ctx, args[1:])
	case "snapshot":
		return m.runSnapshot(ctx, args[1:])
	case "fleet":
		return m.runFleet(ctx, args[1:])
	default:
		return usageErrorf("unknown command %q; commands: serve, kv, status, fleet, tail, skip, prune, snapshot, keys, nats-server, demo, bench (see controlfeed --help)", args[0])
	}
}

func (m *Main) environ() []string {
	if m.Environ == nil {
		return nil
	}
	return m.Environ()
}

// lookupEnv returns the value of an environment variable. The last
// definition wins, as with os.Getenv.
func (m *Main) lookupEnv(key string) (string, bool) {
	val, found := "", false
	for _, kv := range m.environ() {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			val, found = v, true
		}
	}
	return val, found
}

func (m *Main) writeHelp() {
	fmt.Fprintf(m.Stdout, `controlfeed keeps a fleet of nodes in sync with a control plane through an
ordered, idempotent feed of control events, and replicates a key/value table
with it.

A producer records each change in its SQLite database together with an outbox
row, in one transaction; "serve --feed-sink" pumps the outbox into the feed.
Every node runs "serve --feed-source", applies the events in order, exactly
once, each in one SQLite transaction, and can be inspected with "status".

Usage: controlfeed COMMAND [flags] [arguments]

Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(m.Stdout, "  %-17s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(m.Stdout, `
Every flag has an environment variable (--feed-dir: CONTROLFEED_FEED_DIR); a
flag overrides its variable. An unknown CONTROLFEED_* variable is an error.
Valid variables: %s.

Run "controlfeed COMMAND --help" for a command's flags.

Example: a producer and one node sharing a directory feed
  controlfeed serve --db producer.db --feed-sink file --feed-dir /tmp/feed --artifact-dir /tmp/art &
  controlfeed serve --db node1.db --feed-source file --feed-dir /tmp/feed --artifact-dir /tmp/art --listen 127.0.0.1:7480 &
  controlfeed kv put --db producer.db --artifact-dir /tmp/art greeting hello
  controlfeed kv get --db node1.db greeting
`, strings.Join(validEnvNames(), ", "))
}

// commands lists every subcommand, in help order.
var commands = []*command{serveCmd, kvPutCmd, kvGetCmd, kvDeleteCmd, kvListCmd, statusCmd, fleetCmd, fleetEventCmd, fleetWaitCmd, fleetForgetCmd, tailCmd, skipCmd,
	pruneCmd, snapshotCreateCmd, snapshotPublishCmd, snapshotListCmd, snapshotRestoreCmd, keysGenerateCmd, keysShowCmd, keysAnnounceCmd, keysRevokeCmd, natsServerCmd, demoCmd, benchCmd}
