package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/controlfeed/controlfeed/artifact/filestore"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/snapshot"
)

// rssLimitMiB is the target for the peak resident memory of a catch-up.
const rssLimitMiB = 256

// childResult is what ChildMain prints, one JSON object.
type childResult struct {
	Events   int     `json:"events"`
	Seconds  float64 `json:"seconds"`
	VmHWMKiB int64   `json:"vm_hwm_kib"`
}

// ChildMain is the body of the child process of the RSS measurement: it
// parses args (the flags Run passes through Config.Exec: --url, --stream,
// --artifact-dir, --db, --events), catches a new node up on the stream with
// an applier and the kv handlers, and writes one JSON line with its timing
// and peak memory to stdout. A program that sets Config.Exec must route
// those args here.
func ChildMain(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bench-child", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	url := fs.String("url", "", "NATS URL")
	stream := fs.String("stream", "", "stream")
	artDir := fs.String("artifact-dir", "", "artifact store directory")
	dbPath := fs.String("db", "", "node database")
	n := fs.Int("events", 0, "events to apply")
	nodeName := fs.String("node", "rss-node", "durable consumer name")
	restore := fs.String("restore", "", "snapshot manifest to restore first")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("bench: child: %w", err)
	}
	if *url == "" || *stream == "" || *artDir == "" || *dbPath == "" || *n <= 0 {
		return fmt.Errorf("bench: child: --url, --stream, --artifact-dir, --db and --events are required (got %q)", strings.Join(args, " "))
	}
	store, err := filestore.New(*artDir, nil)
	if err != nil {
		return fmt.Errorf("bench: child: %w", err)
	}
	start := time.Now()
	if *restore != "" {
		if _, err := snapshot.RestoreRef(ctx, store, *restore, *dbPath, nil); err != nil {
			return fmt.Errorf("bench: child: %w", err)
		}
	}
	db, err := openDB(ctx, *dbPath)
	if err != nil {
		return fmt.Errorf("bench: child: %w", err)
	}
	defer db.Close()
	cfg := feed.NATSConfig{URLs: []string{*url}, Stream: *stream, Subject: "bench." + *stream, NodeName: *nodeName}
	took, err := catchUp(ctx, db, cfg, store, *n)
	if err != nil {
		return fmt.Errorf("bench: child: %w", err)
	}
	if *restore != "" {
		took = time.Since(start) // the restore counts
	}
	res := childResult{Events: *n, Seconds: took.Seconds(), VmHWMKiB: vmHWM()}
	return json.NewEncoder(stdout).Encode(res)
}

func runRSS(ctx context.Context, e *env) ([]Result, error) {
	if e.cfg.Exec == nil {
		return []Result{{Name: "rss/catch-up", Metric: "peak RSS MiB", OK: true, Note: "skipped: Config.Exec not set"}}, nil
	}
	srv, err := startServer(e.dir)
	if err != nil {
		return nil, err
	}
	defer srv.close()
	artDir := filepath.Join(e.dir, "artifacts")
	p, err := newPool(ctx, artDir)
	if err != nil {
		return nil, err
	}
	n := e.cfg.RSSEvents
	cfg := srv.feedConfig("RSS", "rss-node")
	fill := time.Now()
	if err := fillStream(ctx, cfg, p, n); err != nil {
		return nil, err
	}
	e.log.Info("bench: stream filled", "events", n, "took", time.Since(fill))
	cmd := e.cfg.Exec(ctx, []string{"--url", srv.url, "--stream", "RSS", "--artifact-dir", artDir,
		"--db", filepath.Join(e.dir, "rss-node.db"), "--events", fmt.Sprint(n)})
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("child %v: %w; stderr: %s", cmd.Args, err, strings.TrimSpace(stderr.String()))
	}
	var res childResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return nil, fmt.Errorf("child output %q: %w", stdout.String(), err)
	}
	maxKiB, source := childPeakKiB(res, cmd.ProcessState.SysUsage())
	mib := float64(maxKiB) / 1024
	return []Result{
		{Name: "rss/catch-up", Metric: "peak RSS MiB", Value: mib, Target: fmt.Sprintf("<= %d MiB", rssLimitMiB), OK: mib <= rssLimitMiB,
			Note: fmt.Sprintf("child process applying %d events from JetStream (%s)", n, source)},
		{Name: "rss/catch-up", Metric: "events/s", Value: float64(res.Events) / res.Seconds, OK: true,
			Note: "the same catch-up's throughput, in the child"},
	}, nil
}

// childPeakKiB returns the child's peak resident memory and where it was
// read. The child's own VmHWM is preferred: its memory map is new at exec,
// so it counts only the child. The rusage ru_maxrss of a child is not: Go
// starts children with clone(CLONE_VM|CLONE_VFORK), so until exec the child
// shares the parent's memory map and ru_maxrss includes the parent's whole
// resident set at that moment (the embedded server holding the stream, and
// whatever earlier measurements left), which is what the first runs
// reported. ru_maxrss is used only where VmHWM is unavailable (not Linux).
func childPeakKiB(res childResult, usage any) (kib int64, source string) {
	if res.VmHWMKiB > 0 {
		return res.VmHWMKiB, "child's VmHWM"
	}
	if ru, ok := usage.(*syscall.Rusage); ok {
		return int64(ru.Maxrss), "ru_maxrss, includes the parent's RSS at fork"
	}
	return 0, "unavailable"
}
