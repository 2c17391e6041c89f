package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/internal/freeport"
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

// dumpAndKill is kill for a failed test: SIGQUIT first, so that the Go
// runtime writes every goroutine's stack to the process's log (where was a
// process that logged nothing stuck?), then SIGKILL if it has not exited
// within 5 s.
func (p *proc) dumpAndKill() {
	p.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
}

// stacks returns the goroutine dump a SIGQUIT left at the end of the log,
// cut to the goroutines that run the product's code, or "" if there is none.
func (p *proc) stacks() string {
	b, _ := os.ReadFile(p.logf)
	i := bytes.LastIndex(b, []byte("SIGQUIT: quit"))
	if i < 0 {
		return ""
	}
	var out []string
	for _, g := range strings.Split(string(b[i:]), "\n\n") {
		if strings.Contains(g, "controlfeed/controlfeed/") {
			out = append(out, g)
		}
	}
	s := strings.Join(out, "\n\n")
	if len(s) > 20000 {
		s = s[:20000] + "\n…"
	}
	return s
}

// stop sends SIGTERM and returns the exit error (nil = exit status 0).
func (p *proc) stop() error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	err := <-p.done
	p.cmd = nil
	return err
}

// putRetrying is kv.Put, retried for a while when the artifact store is
// unreachable (a restarted broker the client has not reconnected to yet).
func putRetrying(t *testing.T, ctx context.Context, db *sql.DB, store artifact.Store, key string, val []byte) {
	t.Helper()
	end := time.Now().Add(30 * time.Second)
	for {
		_, err := kv.Put(ctx, db, store, key, val)
		if err == nil {
			return
		}
		if time.Now().After(end) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago, for a process's --listen.
func freeAddr(t *testing.T) string {
	t.Helper()
	return freeport.MustAddr(t)
}

// openTestDB opens (creating and migrating) a node database for the test to
// read, closed at the end of the test.
func openTestDB(t *testing.T, ctx context.Context, path string) *sql.DB {
	t.Helper()
	db, err := node.OpenDB(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// appliedEvents returns a node's controlfeed_applied_events as event_id ->
// outcome.
func appliedEvents(t *testing.T, ctx context.Context, db *sql.DB) map[string]string {
	t.Helper()
	applied := map[string]string{}
	rows, err := db.QueryContext(ctx, `SELECT event_id, outcome FROM controlfeed_applied_events`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, outcome string
		if err := rows.Scan(&id, &outcome); err != nil {
			t.Fatal(err)
		}
		applied[id] = outcome
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return applied
}

func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.logf)
	if i := bytes.LastIndex(b, []byte("SIGQUIT: quit")); i >= 0 {
		b = b[:i] // the dump is shown by stacks
	}
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
	dir := t.TempDir()
	feedDir, artDir := filepath.Join(dir, "feed"), filepath.Join(dir, "artifacts")
	if err := os.MkdirAll(feedDir, 0o755); err != nil { // nodes may start before the producer
		t.Fatal(err)
	}
	store, err := artifact.Open("file", artifact.Config{Dir: artDir})
	if err != nil {
		t.Fatal(err)
	}
	src, err := feed.Open("file", feed.SourceConfig{FileDir: feedDir})
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(src)
	killAndConverge(t, dir, e2eSetup{
		feed:   "file",
		common: []string{"--feed-dir", feedDir, "--artifact-dir", artDir},
		kvArgs: []string{"--artifact-dir", artDir},
		store:  store,
		src:    src,
	})
}

// TestE2E_KillAndConverge_JetStream is TestE2E_KillAndConverge on the
// jetstream feed and artifact store, with the broker a separate
// "controlfeed nats-server" process that is SIGKILLed in the middle of the
// run and restarted on the same port and store a few changes later (while
// it is down the test only deletes keys: a put needs the artifact store).
func TestE2E_KillAndConverge_JetStream(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test with OS processes; skipped with -short")
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	broker := &proc{name: "broker", logf: filepath.Join(dir, "broker.log"),
		args: []string{"nats-server", "--listen", addr, "--store", filepath.Join(dir, "nats")}}
	broker.start(t)
	t.Cleanup(func() {
		if broker.running() {
			broker.kill()
		}
		if t.Failed() {
			t.Logf("--- broker log (tail) ---\n%s", broker.logTail())
		}
	})
	waitFor(t, 30*time.Second, "the broker to be ready", func() bool {
		return strings.Contains(broker.logTail(), "nats-server ready: ")
	})
	url := "nats://" + addr
	store, err := artifact.Open("jetstream", artifact.Config{NATS: artifact.NATSConfig{URLs: []string{url}}})
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(store)
	src, err := feed.Open("jetstream", feed.SourceConfig{NATS: feed.NATSConfig{URLs: []string{url}}}) // read-only
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(src)
	killAndConverge(t, dir, e2eSetup{
		feed:   "jetstream",
		common: []string{"--nats-url", url, "--artifact-store", "jetstream"},
		kvArgs: []string{"--nats-url", url, "--artifact-store", "jetstream"},
		store:  store,
		src:    src,
		broker: broker,
	})
}

// e2eSetup is what differs between the backends of killAndConverge.
type e2eSetup struct {
	feed   string         // backend name for --feed-source and --feed-sink
	common []string       // flags of every process (feed and artifact location)
	kvArgs []string       // flags of "kv put" (artifact location)
	store  artifact.Store // the artifact store, for the test's own kv.Put
	src    feed.Source    // a read-only source of the feed, for head and contents
	broker *proc          // the broker process to kill once midway, or nil
}

// killAndConverge runs a producer and three nodes as processes of the
// binary, makes kv changes on the producer's database while SIGKILLing and
// restarting them (and the broker, if any), then checks that the feed holds
// each event once and that every node matches the producer: kv digest,
// applied_events (each event once, applied) and cursor == head.
func killAndConverge(t *testing.T, dir string, setup e2eSetup) {
	ctx := context.Background()
	common := append(slices.Clone(setup.common), "--poll-interval", "20ms", "--log-level", "debug")
	store, src := setup.store, setup.src

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	// Create and migrate every database before any process starts, and keep
	// them open for reading.
	open := func(name string) *sql.DB { return openTestDB(t, ctx, filepath.Join(dir, name+".db")) }
	pdb := open("producer")
	procs := []*proc{{name: "producer", args: append([]string{"serve", "--db", filepath.Join(dir, "producer.db"), "--feed-sink", setup.feed}, common...)}}
	ndbs := map[string]*sql.DB{}
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("node%d", i)
		ndbs[name] = open(name)
		procs = append(procs, &proc{name: name, args: append([]string{"serve", "--db", filepath.Join(dir, name+".db"),
			"--feed-source", setup.feed, "--node-name", name}, common...)})
	}
	for _, p := range procs {
		p.logf = filepath.Join(dir, p.name+".log")
		p.start(t)
	}
	t.Cleanup(func() {
		for _, p := range procs {
			switch {
			case !p.running():
			case t.Failed():
				p.dumpAndKill()
			default:
				p.kill()
			}
		}
		if t.Failed() {
			for _, p := range procs {
				t.Logf("--- %s log (tail) ---\n%s", p.name, p.logTail())
				if st := p.stacks(); st != "" {
					t.Logf("--- %s: its goroutines in the product's code at SIGQUIT ---\n%s", p.name, st)
				}
			}
		}
	})

	const ops = 300
	events, kills := 0, 0
	restartAt := map[*proc]int{}
	for i := range ops {
		if setup.broker != nil && i == ops/2 {
			setup.broker.kill()
			kills++
			restartAt[setup.broker] = i + 10
		}
		key := fmt.Sprintf("k%02d", rng.IntN(40))
		if rng.IntN(5) == 0 || (setup.broker != nil && !setup.broker.running()) {
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
			putRetrying(t, ctx, pdb, store, key, val)
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
		if setup.broker != nil && !setup.broker.running() {
			time.Sleep(30 * time.Millisecond) // let everyone notice the outage
		}
	}
	for p := range restartAt {
		p.start(t)
	}
	// The CLI in its own process writes too; the running pump picks it up.
	out, err := exec.Command(binary, append([]string{"kv", "put", "--db", filepath.Join(dir, "producer.db")},
		append(slices.Clone(setup.kvArgs), "written-by", "the controlfeed binary")...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("controlfeed kv put: %v\n%s", err, out)
	}
	events++
	t.Logf("%d kv operations, %d events, %d kills", ops, events, kills)

	head := func() uint64 {
		h, err := src.(feed.HeadReporter).Head(ctx)
		if err != nil {
			t.Logf("head: %v (retrying)", err) // the broker may still be reconnecting
			return 0
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
	end := time.Now().Add(90 * time.Second)
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
		applied := appliedEvents(t, ctx, db)
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

	// SIGTERM stops every process cleanly (the broker last).
	if setup.broker != nil {
		defer func() {
			if err := setup.broker.stop(); err != nil {
				t.Errorf("broker: exit after SIGTERM: %v", err)
			}
		}()
	}
	for _, p := range procs {
		if err := p.stop(); err != nil {
			t.Errorf("%s: exit after SIGTERM: %v", p.name, err)
		}
		if log := p.logTail(); !strings.Contains(log, "controlfeed node stopped") {
			t.Errorf("%s did not log a clean stop", p.name)
		}
	}
}
