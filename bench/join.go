package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/kv"
	"github.com/controlfeed/controlfeed/snapshot"
)

// Targets of the join measurement.
const (
	joinMinSpeedup = 10  // snapshot join at least this many times faster than replay
	joinRSSMiB     = 128 // peak RSS of the snapshot join
)

// joinTail is how many events are published after the snapshot, for the
// joining node to apply after its restore.
const joinTail = 1000

// runJoin compares two ways for a new node to join a feed of JoinEvents
// events over JoinKeys keys, each in a child process (time and peak RSS):
// replaying the whole feed, and restoring a snapshot of a node at the
// feed's end (taken, untimed, from the replayed database) and then
// applying the joinTail events published after it.
func runJoin(ctx context.Context, e *env) ([]Result, error) {
	if e.cfg.Exec == nil {
		return []Result{{Name: "join/snapshot", Metric: "seconds", OK: true, Note: "skipped: Config.Exec not set"}}, nil
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
	n, keys := e.cfg.JoinEvents, e.cfg.JoinKeys
	cfg := srv.feedConfig("JOIN", "join-replay")
	fill := time.Now()
	if err := fillKeys(ctx, cfg, p, 1, n, keys); err != nil {
		return nil, err
	}
	e.log.Info("bench: join stream filled", "events", n, "keys", keys, "took", time.Since(fill))
	replayDB := filepath.Join(e.dir, "replay.db")
	replay, err := runChild(ctx, e, []string{"--url", srv.url, "--stream", "JOIN", "--artifact-dir", artDir,
		"--db", replayDB, "--events", fmt.Sprint(n), "--node", "join-replay"})
	if err != nil {
		return nil, err
	}
	db, err := openDB(ctx, replayDB)
	if err != nil {
		return nil, err
	}
	m, err := snapshot.Create(ctx, db, p.store, &snapshot.CreateOptions{TempDir: e.dir, Node: "join-replay"})
	db.Close()
	if err != nil {
		return nil, err
	}
	e.log.Info("bench: snapshot taken", "cursor", m.ControlVersion, "bytes", m.Database.Size)
	if err := fillKeys(ctx, cfg, p, n+1, n+joinTail, keys); err != nil {
		return nil, err
	}
	snap, err := runChild(ctx, e, []string{"--url", srv.url, "--stream", "JOIN", "--artifact-dir", artDir,
		"--db", filepath.Join(e.dir, "joined.db"), "--events", fmt.Sprint(n + joinTail), "--node", "join-snapshot", "--restore", m.Ref})
	if err != nil {
		return nil, err
	}
	speedup := replay.Seconds / snap.Seconds
	replayMiB, snapMiB := float64(replay.VmHWMKiB)/1024, float64(snap.VmHWMKiB)/1024
	size := fmt.Sprintf("%d events over %d keys", n, keys)
	return []Result{
		{Name: "join/replay", Metric: "seconds", Value: replay.Seconds, OK: true,
			Note: "a new node replays the whole feed (" + size + "), in a child process"},
		{Name: "join/snapshot", Metric: "seconds", Value: snap.Seconds, Baseline: replay.Seconds, Ratio: speedup,
			Target: fmt.Sprintf("replay/snapshot >= %d", joinMinSpeedup), OK: speedup >= joinMinSpeedup,
			Note: fmt.Sprintf("restore of a %.1f MiB snapshot at %d, then %d events after it; ratio = replay time / this", float64(m.Database.Size)/(1<<20), n, joinTail)},
		{Name: "join/replay", Metric: "peak RSS MiB", Value: replayMiB, OK: true, Note: "the replaying child's VmHWM"},
		{Name: "join/snapshot", Metric: "peak RSS MiB", Value: snapMiB, Baseline: replayMiB, Ratio: snapMiB / replayMiB,
			Target: fmt.Sprintf("<= %d MiB", joinRSSMiB), OK: snapMiB <= joinRSSMiB, Note: "the restoring child's VmHWM; baseline = replay's"},
	}, nil
}

// runChild runs the bench child with args and returns what it printed.
func runChild(ctx context.Context, e *env, args []string) (childResult, error) {
	cmd := e.cfg.Exec(ctx, args)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return childResult{}, fmt.Errorf("child %v: %w; stderr: %s", cmd.Args, err, strings.TrimSpace(stderr.String()))
	}
	var res childResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return childResult{}, fmt.Errorf("child output %q: %w", stdout.String(), err)
	}
	return res, nil
}

// fillKeys publishes events from..to, event i a put of key i mod keys.
func fillKeys(ctx context.Context, cfg feed.NATSConfig, p *pool, from, to, keys int) error {
	sink, err := natsfeed.NewSink(ctx, cfg, nil)
	if err != nil {
		return err
	}
	defer sink.Close()
	now := time.Now().UTC()
	const chunk = 4096
	evs := make([]controlevent.Event, 0, chunk)
	for i := from; i <= to; i += chunk {
		evs = evs[:0]
		for j := i; j < i+chunk && j <= to; j++ {
			ref := p.refs[j%poolSize]
			evs = append(evs, controlevent.Event{EventID: fmt.Sprintf("join-%09d", j), Type: kv.TypePut,
				Key: fmt.Sprintf("key/%07d", j%keys), Version: int64(j), ArtifactRef: ref, Checksum: ref, CreatedAt: now})
		}
		if _, err := sink.AppendBatch(ctx, evs); err != nil {
			return fmt.Errorf("fill stream %s: %w", cfg.Stream, err)
		}
	}
	return nil
}
