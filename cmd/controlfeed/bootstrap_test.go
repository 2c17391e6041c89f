package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/artifact/filestore"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/internal/natsembed"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/kv"
	"github.com/controlfeed/controlfeed/snapshot"
	"github.com/controlfeed/controlfeed/snapshot/natscatalog"
)

// joinFleet is a JetStream feed that retains only its newest events, a file
// artifact store, and nodes run in-process by Main, for the bootstrap
// tests. Events are published straight to the stream (no producer
// database): what matters is the feed and the nodes.
type joinFleet struct {
	t      *testing.T
	srv    *natsembed.Server
	env    []string
	art    string
	dir    string
	sink   *natsfeed.Sink
	refs   []string // artifact refs of the values
	n      int      // events published
	keys   int
	cancel map[string]context.CancelFunc
	done   map[string]chan error
	logs   map[string]*syncBuffer
}

// newJoinFleet creates the stream (retaining the newest retain messages)
// and the snapshot catalog bucket, as a producer would.
func newJoinFleet(t *testing.T, retain int64, keys int) *joinFleet {
	t.Helper()
	ctx := context.Background()
	f := &joinFleet{t: t, srv: natsembed.StartForTest(t), dir: t.TempDir(), keys: keys,
		cancel: map[string]context.CancelFunc{}, done: map[string]chan error{}, logs: map[string]*syncBuffer{}}
	f.art = filepath.Join(f.dir, "artifacts")
	f.env = []string{"CONTROLFEED_NATS_URL=" + f.srv.ClientURL(), "CONTROLFEED_ARTIFACT_DIR=" + f.art,
		"CONTROLFEED_POLL_INTERVAL=20ms", "CONTROLFEED_FEED_SOURCE=jetstream"}
	nc, err := nats.Connect(f.srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: natsfeed.DefaultStream, Subjects: []string{natsfeed.DefaultSubject},
		Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardOld,
		MaxMsgs: retain, Duplicates: natsfeed.DefaultDuplicateWindow}); err != nil {
		t.Fatal(err)
	}
	if f.sink, err = natsfeed.NewSink(ctx, feed.NATSConfig{URLs: []string{f.srv.ClientURL()}}, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.sink.Close() })
	var ccfg snapshot.CatalogConfig
	ccfg.Feed.NATS.URLs = []string{f.srv.ClientURL()}
	ccfg.Create = true
	cat, err := natscatalog.New(ctx, ccfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	cat.Close()
	store, err := filestore.New(f.art, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 32 {
		ref, err := store.Put(ctx, strings.NewReader(fmt.Sprintf("value %d %s", i, strings.Repeat("x", i*7))))
		if err != nil {
			t.Fatal(err)
		}
		f.refs = append(f.refs, ref)
	}
	return f
}

// publish appends n kv events (puts, every 13th a delete) to the stream.
func (f *joinFleet) publish(n int) {
	f.t.Helper()
	ctx := context.Background()
	batch := make([]controlevent.Event, 0, 256)
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if _, err := f.sink.AppendBatch(ctx, batch); err != nil {
			f.t.Fatal(err)
		}
		batch = batch[:0]
	}
	for range n {
		f.n++
		key := fmt.Sprintf("k%05d", (f.n*7919)%f.keys)
		e := controlevent.Event{EventID: controlevent.NewEventID(), Type: kv.TypePut, Key: key, Version: int64(f.n),
			CreatedAt: time.Unix(int64(f.n), 0).UTC()}
		if f.n%13 == 0 {
			e.Type = kv.TypeDelete
		} else {
			e.ArtifactRef = f.refs[f.n%len(f.refs)]
			e.Checksum = e.ArtifactRef
		}
		if batch = append(batch, e); len(batch) == cap(batch) {
			flush()
		}
	}
	flush()
}

// publishPaced publishes n events in chunks of chunk, waiting after each
// for the reference node name (on db) to apply them, so that it never
// falls behind the retention itself.
func (f *joinFleet) publishPaced(n, chunk int, name, db string) {
	f.t.Helper()
	for n > 0 {
		k := min(n, chunk)
		f.publish(k)
		n -= k
		f.waitCursor(name, db, uint64(f.n))
	}
}

// serve starts "serve" for node name on db with extra flags.
func (f *joinFleet) serve(name, db string, extra ...string) {
	f.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel[name], f.done[name], f.logs[name] = cancel, make(chan error, 1), &syncBuffer{}
	m := &Main{Stderr: f.logs[name], Environ: func() []string { return f.env }}
	args := append([]string{"serve", "--db", db, "--node-name", name}, extra...)
	go func(done chan error) { done <- m.Run(ctx, args) }(f.done[name])
	f.t.Cleanup(func() { f.stop(name) })
}

// stop stops node name, if it runs, and waits for it.
func (f *joinFleet) stop(name string) {
	f.t.Helper()
	c, ok := f.cancel[name]
	if !ok {
		return
	}
	c()
	delete(f.cancel, name)
	if err := <-f.done[name]; err != nil {
		f.t.Errorf("serve %s: %v\n%s", name, err, f.logs[name])
	}
}

// cursor reads the node's cursor from its database (0 if unreadable yet).
func (f *joinFleet) cursor(db string) uint64 {
	ro, err := node.OpenDBReadOnly(context.Background(), db)
	if err != nil {
		return 0
	}
	defer ro.Close()
	c, _ := applier.ReadCursor(context.Background(), ro)
	return c
}

func (f *joinFleet) digest(db string) string {
	f.t.Helper()
	ro, err := node.OpenDBReadOnly(context.Background(), db)
	if err != nil {
		f.t.Fatal(err)
	}
	defer ro.Close()
	d, err := kv.Digest(context.Background(), ro)
	if err != nil {
		f.t.Fatal(err)
	}
	return d
}

func (f *joinFleet) waitCursor(name, db string, want uint64) {
	f.t.Helper()
	waitFor(f.t, 3*time.Minute, fmt.Sprintf("node %s to reach cursor %d", name, want), func() bool {
		if l := f.logs[name]; l != nil && strings.Contains(l.String(), "level=ERROR") && !strings.Contains(l.String(), "retention") {
			f.t.Fatalf("node %s logged an error:\n%s", name, l)
		}
		return f.cursor(db) == want
	})
}

// joinSizes returns the events and the stream's retention of the join
// test: CI-sized by default, the 200k/10k with
// CONTROLFEED_TEST_BIG_JOIN=1 in the test's environment.
func joinSizes() (events, retain int) {
	if os.Getenv("CONTROLFEED_TEST_BIG_JOIN") == "1" {
		return 200_000, 10_000
	}
	return 20_000, 2_000
}

// A node joining a stream that retains only its newest events bootstraps
// from the published snapshot and converges (same state, cursor = head); a
// node without one reports behind-retention naming the fix; a node wiped
// while the fleet runs rejoins; and a lagging node is replaced only with
// --bootstrap-when-behind, and only by a snapshot that covers the
// retention: at start-up, or while it runs once one is published.
func TestBootstrap_JoinAfterRetention(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes thousands of events")
	}
	events, retain := joinSizes()
	// Registered before the nodes' cleanups, so it runs after they stopped.
	t.Cleanup(func(d time.Duration) func() { return func() { behindCheckInterval = d } }(behindCheckInterval))
	behindCheckInterval = 200 * time.Millisecond
	f := newJoinFleet(t, int64(retain), 1000)
	a := filepath.Join(f.dir, "a.db")
	f.serve("a", a)

	// A lagging node's database, copied while early in the feed.
	pace := retain / 4
	f.publishPaced(retain/2, pace, "a", a)
	lagging := filepath.Join(f.dir, "lagging.db")
	mustRun(t, f.env, "", "snapshot", "create", "--db", a, "--out", lagging)

	// Most of the history, then a snapshot inside the retention window.
	f.publishPaced(events-retain/2-retain/2, pace, "a", a)
	out := mustRun(t, f.env, "", "snapshot", "publish", "--db", a, "--json")
	if !strings.Contains(out, `"control_version": `+strconv.Itoa(f.n)) {
		t.Fatalf("snapshot publish --json = %s", out)
	}
	f.publishPaced(retain/2, pace, "a", a)
	head := uint64(f.n)

	// Without bootstrap a new node is behind the retention, and says so.
	off := filepath.Join(f.dir, "off.db")
	f.serve("off", off, "--bootstrap=off")
	waitFor(t, time.Minute, "the node without bootstrap to report behind-retention", func() bool {
		return strings.Contains(f.logs["off"].String(), "behind the feed's retention")
	})
	f.stop("off")

	// A new node bootstraps and converges.
	b := filepath.Join(f.dir, "b.db")
	f.serve("b", b)
	f.waitCursor("b", b, head)
	if !strings.Contains(f.logs["b"].String(), "bootstrap: restored the feed's latest snapshot") {
		t.Fatalf("node b did not log its bootstrap:\n%s", f.logs["b"])
	}
	if f.digest(b) != f.digest(a) {
		t.Fatal("the bootstrapped node's state differs from the reference node's")
	}

	// Wiped while the fleet runs: its database is deleted, it rejoins under
	// the same name (its durable consumer is further on) and converges.
	f.stop("b")
	for _, p := range []string{b, b + "-wal", b + "-shm"} {
		os.Remove(p)
	}
	f.publish(100)
	head = uint64(f.n)
	f.serve("b", b)
	f.waitCursor("b", b, head)
	f.waitCursor("a", a, head)
	if f.digest(b) != f.digest(a) {
		t.Fatal("the wiped node's state differs after it rejoined")
	}

	// A lagging node is not replaced without the opt-in: it reports the
	// retention and names the command that fixes it.
	lag1 := filepath.Join(f.dir, "lag1.db")
	copyDB(t, lagging, lag1)
	addr := freeAddr(t)
	f.serve("lag1", lag1, "--listen", addr)
	fix := "controlfeed snapshot restore --db " + lag1 + " --latest --force"
	waitFor(t, time.Minute, "the lagging node to name the fix", func() bool {
		return strings.Contains(f.logs["lag1"].String(), fix)
	})
	waitFor(t, time.Minute, "the lagging node's status to name the fix", func() bool {
		st := httpGet(t, "http://"+addr+"/v1/status")
		return strings.Contains(st, `"behind_retention"`) && strings.Contains(st, fix)
	})
	f.stop("lag1")
	if c := f.cursor(lag1); c != uint64(retain/2) {
		t.Fatalf("the lagging node's database was changed without --bootstrap-when-behind: cursor %d", c)
	}

	// With it, it is replaced by the latest snapshot and converges.
	f.serve("lag1", lag1, "--bootstrap-when-behind")
	f.waitCursor("lag1", lag1, head)
	if !strings.Contains(f.logs["lag1"].String(), "replacing the database of a node behind the feed's retention") {
		t.Fatalf("the replacement was not logged:\n%s", f.logs["lag1"])
	}
	if f.digest(lag1) != f.digest(a) {
		t.Fatal("the replaced node's state differs")
	}
	f.stop("lag1")

	// Once the retention has passed the latest snapshot, no snapshot can
	// help: the node says so and keeps its database.
	f.publishPaced(retain+10, pace, "a", a)
	lag2 := filepath.Join(f.dir, "lag2.db")
	copyDB(t, lagging, lag2)
	addr = freeAddr(t)
	f.serve("lag2", lag2, "--bootstrap-when-behind", "--listen", addr)
	waitFor(t, time.Minute, "the lagging node to say no snapshot can help", func() bool {
		return strings.Contains(f.logs["lag2"].String(), "no published snapshot can bring this node within the feed's retention")
	})
	waitFor(t, time.Minute, "the lagging node's status to say no snapshot can help", func() bool {
		return strings.Contains(httpGet(t, "http://"+addr+"/v1/status"), "no published snapshot can bring this node within the feed's retention")
	})
	if c := f.cursor(lag2); c != uint64(retain/2) {
		t.Fatalf("the lagging node's database was replaced by a useless snapshot: cursor %d", c)
	}

	// Once a snapshot that covers the retention is published, the running
	// node finds it, replaces its database and converges.
	mustRun(t, f.env, "", "snapshot", "publish", "--db", a)
	f.waitCursor("lag2", lag2, uint64(f.n))
	if !strings.Contains(f.logs["lag2"].String(), "the running node is behind the feed's retention; replacing its database") {
		t.Fatalf("the running node's replacement was not logged:\n%s", f.logs["lag2"])
	}
	if f.digest(lag2) != f.digest(a) {
		t.Fatal("the node replaced while running differs")
	}
}

func copyDB(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestServe_BootstrapOffWhenBehindRefused(t *testing.T) {
	dir := t.TempDir()
	_, _, err := run(t, nil, "", "serve", "--db", filepath.Join(dir, "n.db"), "--feed-source", "file", "--feed-dir", dir,
		"--bootstrap", "off", "--bootstrap-when-behind")
	if !isUsage(err) || !strings.Contains(err.Error(), "would never restore") {
		t.Fatalf("serve --bootstrap off --bootstrap-when-behind = %v, want a usage error", err)
	}
}
