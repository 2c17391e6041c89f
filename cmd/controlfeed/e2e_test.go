package main

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/kv"
)

// proc is one controlfeed OS process that the test kills and restarts.
type proc struct {
	name string
	args []string
	logf string
	cmd  *exec.Cmd
	done chan error
}

func (p *proc) start(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(p.logf, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(binary, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", p.name, err)
	}
	p.done = make(chan error, 1)
	go func() { p.done <- p.cmd.Wait(); f.Close() }()
}

func (p *proc) running() bool { return p.cmd != nil }

// kill sends SIGKILL and reaps the process.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
	p.cmd = nil
}

// stop sends SIGTERM and returns the exit error (nil = exit status 0).
func (p *proc) stop() error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	err := <-p.done
	p.cmd = nil
	return err
}

func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.logf)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// TestE2E_KillAndConverge runs a producer and three nodes as real processes
// sharing a file feed and a file artifact store, writes a few hundred kv
// changes while SIGKILLing and restarting processes at random, and checks
// that every node converges to the producer's state with every event applied
// exactly once.
func TestE2E_KillAndConverge(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test with OS processes; skipped with -short")
	}
	ctx := context.Background()
	dir := t.TempDir()
	feedDir, artDir := filepath.Join(dir, "feed"), filepath.Join(dir, "artifacts")
	if err := os.MkdirAll(feedDir, 0o755); err != nil { // nodes may start before the producer
		t.Fatal(err)
	}
	common := []string{"--feed-dir", feedDir, "--artifact-dir", artDir, "--poll-interval", "20ms", "--log-level", "debug"}

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	// Create and migrate every database before any process starts, and keep
	// them open for reading.
	open := func(name string) *sql.DB {
		db, err := node.OpenDB(ctx, filepath.Join(dir, name+".db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	pdb := open("producer")
	procs := []*proc{{name: "producer", args: append([]string{"serve", "--db", filepath.Join(dir, "producer.db"), "--feed-sink", "file"}, common...)}}
	ndbs := map[string]*sql.DB{}
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("node%d", i)
		ndbs[name] = open(name)
		procs = append(procs, &proc{name: name, args: append([]string{"serve", "--db", filepath.Join(dir, name+".db"),
			"--feed-source", "file", "--node-name", name}, common...)})
	}
	for _, p := range procs {
		p.logf = filepath.Join(dir, p.name+".log")
		p.start(t)
	}
	t.Cleanup(func() {
		for _, p := range procs {
			if p.running() {
				p.kill()
			}
		}
		if t.Failed() {
			for _, p := range procs {
				t.Logf("--- %s log (tail) ---\n%s", p.name, p.logTail())
			}
		}
	})

	store, err := artifact.Open("file", artifact.Config{Dir: artDir})
	if err != nil {
		t.Fatal(err)
	}
	const ops = 300
	events, kills := 0, 0
	restartAt := map[*proc]int{}
	for i := range ops {
		key := fmt.Sprintf("k%02d", rng.IntN(40))
		if rng.IntN(5) == 0 {
			_, existed, err := kv.Delete(ctx, pdb, key)
			if err != nil {
				t.Fatal(err)
			}
			if existed {
				events++
			}
		} else {
			val := make([]byte, rng.IntN(64))
			for j := range val {
				val[j] = byte(rng.UintN(256))
			}
			if _, err := kv.Put(ctx, pdb, store, key, val); err != nil {
				t.Fatal(err)
			}
			events++
		}
		for p, at := range restartAt {
			if i >= at {
				p.start(t)
				delete(restartAt, p)
			}
		}
		if rng.IntN(15) == 0 {
			p := procs[rng.IntN(len(procs))]
			if p.running() {
				p.kill()
				kills++
				restartAt[p] = i + rng.IntN(10)
			}
		}
		if rng.IntN(4) == 0 {
			time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond) // let the pipeline run into the kills
		}
	}
	for p := range restartAt {
		p.start(t)
	}
	// The CLI in its own process writes too; the running pump picks it up.
	out, err := exec.Command(binary, "kv", "put", "--db", filepath.Join(dir, "producer.db"), "--artifact-dir", artDir,
		"written-by", "the controlfeed binary").CombinedOutput()
	if err != nil {
		t.Fatalf("controlfeed kv put: %v\n%s", err, out)
	}
	events++
	t.Logf("%d kv operations, %d events, %d kills", ops, events, kills)

	src, err := feed.Open("file", feed.SourceConfig{FileDir: feedDir})
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(src)
	head := func() uint64 {
		h, err := src.(feed.HeadReporter).Head(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	var lastState string
	converged := func() bool {
		ps, err := node.ReadStatus(ctx, pdb)
		if err != nil {
			t.Fatal(err)
		}
		h := head()
		lastState = fmt.Sprintf("producer pending %d dead %d, head %d", ps.OutboxPending, ps.OutboxDead, h)
		ok := ps.OutboxPending == 0 && h == uint64(events)
		for name, db := range ndbs {
			st, err := node.ReadStatus(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			lastState += fmt.Sprintf("; %s cursor %d halted %v", name, st.Cursor, st.Halted)
			ok = ok && st.Cursor == h
		}
		return ok
	}
	end := time.Now().Add(45 * time.Second)
	for !converged() {
		if time.Now().After(end) {
			t.Fatalf("no convergence: %s", lastState)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The feed holds each event once, in order.
	var feedIDs []string
	seen := map[string]bool{}
	for cursor := uint64(0); ; {
		evs, err := src.Poll(ctx, cursor)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			break
		}
		for _, e := range evs {
			if seen[e.EventID] {
				t.Errorf("event %s is in the feed twice", e.EventID)
			}
			seen[e.EventID] = true
			feedIDs = append(feedIDs, e.EventID)
			cursor = e.ControlVersion
		}
	}
	if len(feedIDs) != events {
		t.Errorf("feed holds %d events, want %d", len(feedIDs), events)
	}

	want, err := kv.Digest(ctx, pdb)
	if err != nil {
		t.Fatal(err)
	}
	for name, db := range ndbs {
		if got, err := kv.Digest(ctx, db); err != nil || got != want {
			t.Errorf("%s: kv digest %s (%v), producer's %s", name, got, err, want)
		}
		applied := map[string]string{}
		rows, err := db.QueryContext(ctx, `SELECT event_id, outcome FROM controlfeed_applied_events`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id, outcome string
			if err := rows.Scan(&id, &outcome); err != nil {
				t.Fatal(err)
			}
			applied[id] = outcome
		}
		rows.Close()
		if len(applied) != len(feedIDs) {
			t.Errorf("%s: %d rows in applied_events, want %d", name, len(applied), len(feedIDs))
		}
		for _, id := range feedIDs {
			if applied[id] != "applied" {
				t.Errorf("%s: event %s has outcome %q, want applied", name, id, applied[id])
				break
			}
		}
	}
	// The kv table as the CLI prints it matches too.
	wantList := mustRun(t, nil, "", "kv", "list", "--db", filepath.Join(dir, "producer.db"))
	if !strings.Contains(wantList, "written-by\tthe controlfeed binary\n") {
		t.Errorf("producer kv list lacks the key the binary wrote:\n%s", wantList)
	}
	if got := mustRun(t, nil, "", "kv", "list", "--db", filepath.Join(dir, "node1.db")); got != wantList {
		t.Errorf("kv list differs between node1 and the producer")
	}

	// SIGTERM stops every process cleanly.
	for _, p := range procs {
		if err := p.stop(); err != nil {
			t.Errorf("%s: exit after SIGTERM: %v", p.name, err)
		}
		if log := p.logTail(); !strings.Contains(log, "controlfeed node stopped") {
			t.Errorf("%s did not log a clean stop", p.name)
		}
	}
}
