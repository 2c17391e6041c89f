package node_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/internal/natsembed"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/kv"
	"github.com/controlfeed/controlfeed/outbox"
	"github.com/controlfeed/controlfeed/trust"
)

// hostileFeed is what an attacker with write access to the feed can do,
// bypassing the producer and the broker's deduplication: append any bytes
// at the next position and delete a position.
type hostileFeed interface {
	events(t *testing.T) []controlevent.Event
	write(t *testing.T, e controlevent.Event)
	drop(t *testing.T, cv uint64)
}

// fileHostile writes into a file feed's directory under its lock, as a
// sidecar with write access would.
type fileHostile struct {
	dir string
	src feed.Source
}

func (h *fileHostile) events(t *testing.T) []controlevent.Event {
	evs, err := h.src.Poll(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func (h *fileHostile) write(t *testing.T, e controlevent.Event) {
	head, err := h.src.(feed.HeadReporter).Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	e.ControlVersion = head + 1
	b, err := controlevent.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(h.dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(h.dir, ".hostile.tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(h.dir, fmt.Sprintf("%020d-hostile.json", e.ControlVersion))); err != nil {
		t.Fatal(err)
	}
}

func (h *fileHostile) drop(t *testing.T, cv uint64) {
	matches, _ := filepath.Glob(filepath.Join(h.dir, fmt.Sprintf("%020d*.json", cv)))
	if len(matches) != 1 {
		t.Fatalf("file of position %d: %v", cv, matches)
	}
	if err := os.Remove(matches[0]); err != nil {
		t.Fatal(err)
	}
}

// natsHostile publishes straight to the stream (no Nats-Msg-Id, so the
// broker does not deduplicate) and deletes stream messages.
type natsHostile struct {
	js      jetstream.JetStream
	stream  string
	subject string
}

func (h *natsHostile) events(t *testing.T) []controlevent.Event {
	ctx := context.Background()
	s, err := h.js.Stream(ctx, h.stream)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := s.Info(ctx)
	var out []controlevent.Event
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		e, err := controlevent.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		e.ControlVersion = seq
		out = append(out, e)
	}
	return out
}

func (h *natsHostile) write(t *testing.T, e controlevent.Event) {
	e.ControlVersion = 0
	b, err := controlevent.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.js.Publish(context.Background(), h.subject, b); err != nil {
		t.Fatal(err)
	}
}

func (h *natsHostile) drop(t *testing.T, cv uint64) {
	s, err := h.js.Stream(context.Background(), h.stream)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMsg(context.Background(), cv); err != nil {
		t.Fatal(err)
	}
}

// TestNode_HostileFeed is the feed an attacker writes to: forged events in a
// file feed's directory and published straight to the JetStream stream, and
// events deleted or reordered there. With the producer signing and the node
// trusting its key, every case is refused with its own reason and nothing
// forged is applied; after the documented operator action (skip
// --security-override) the node follows the producer again.
func TestNode_HostileFeed(t *testing.T) {
	srv := natsembed.StartForTest(t)
	key, err := trust.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	attacker, _ := trust.GenerateKey(rand.Reader)
	ring, _ := trust.NewKeyring(key.Public())

	type fixture struct {
		prod    *node.Node
		hostile hostileFeed
		start   func() *node.Node
	}
	setup := func(t *testing.T, backend string, i int) fixture {
		dir := t.TempDir()
		art := artifactDir(filepath.Join(dir, "art"))
		var fcfg feed.SourceConfig
		var h hostileFeed
		switch backend {
		case "file":
			fcfg = feed.SourceConfig{FileDir: filepath.Join(dir, "feed")}
		case "jetstream":
			stream, subject := fmt.Sprintf("HOSTILE%d", i), fmt.Sprintf("hostile.%d", i)
			fcfg = feed.SourceConfig{NATS: feed.NATSConfig{URLs: []string{srv.ClientURL()}, NodeName: "n1", Stream: stream, Subject: subject}}
		}
		prod := start(t, &node.Config{DB: filepath.Join(dir, "p.db"), FeedSink: backend, Feed: fcfg, Artifact: art, SigningKey: key})
		switch backend {
		case "file":
			src, err := feed.Open("file", fcfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { src.(interface{ Close() error }).Close() })
			h = &fileHostile{dir: fcfg.FileDir, src: src}
		case "jetstream":
			nc, err := nats.Connect(srv.ClientURL())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			js, _ := jetstream.New(nc)
			h = &natsHostile{js: js, stream: fcfg.NATS.Stream, subject: fcfg.NATS.Subject}
		}
		return fixture{prod: prod, hostile: h, start: func() *node.Node {
			return start(t, &node.Config{DB: filepath.Join(dir, "n1.db"), FeedSource: backend, Feed: fcfg, Artifact: art,
				NodeName: "n1", PollInterval: 10 * time.Millisecond, TrustedKeys: ring})
		}}
	}
	ctx := context.Background()
	put := func(t *testing.T, f fixture, keys ...string) {
		t.Helper()
		want := f.prod.Pump().Stats().Published + uint64(len(keys))
		for _, k := range keys {
			if _, err := kv.Put(ctx, f.prod.DB(), f.prod.Store(), k, []byte("v-"+k)); err != nil {
				t.Fatal(err)
			}
		}
		f.prod.Pump().Notify()
		waitFor(t, "the producer to publish", func() bool { return f.prod.Pump().Stats().Published >= want })
	}
	// halts waits for n to refuse event id with reason, checks nothing
	// forged was applied and a plain skip is refused, then overrides.
	halts := func(t *testing.T, n *node.Node, id, reason string) {
		t.Helper()
		waitFor(t, fmt.Sprintf("a security halt at %s (%s)", id, reason), func() bool {
			st := status(t, n)
			stored, err := applier.ReadStatus(ctx, n.DB()) // persisted just after the state changes
			return st.Halted != nil && st.Halted.EventID == id && st.Halted.Security == reason && st.State == "security_halted" &&
				err == nil && stored.Halted != nil && stored.Halted.EventID == id
		})
		if _, ok, _ := kv.Get(ctx, n.DB(), "evil"); ok {
			t.Fatalf("the forged value was applied")
		}
		if err := applier.Skip(ctx, n.DB(), id); !errors.Is(err, applier.ErrSecurityHalted) {
			t.Fatalf("plain skip of a security halt = %v", err)
		}
		if err := applier.SkipSecurityHalt(ctx, n.DB(), id); err != nil {
			t.Fatal(err)
		}
	}
	// resumes checks that n follows the producer again.
	resumes := func(t *testing.T, f fixture, n *node.Node) {
		t.Helper()
		put(t, f, "after")
		waitFor(t, "the node to apply the producer's next event", func() bool {
			v, ok, _ := kv.Get(ctx, n.DB(), "after")
			return ok && string(v.Value) == "v-after" && status(t, n).Halted == nil
		})
	}
	forged := func(base controlevent.Event, id string) controlevent.Event {
		e, _ := trust.Unsigned(base)
		e.EventID, e.Key = id, "evil"
		return e
	}

	cases := []struct {
		name string
		run  func(t *testing.T, f fixture)
	}{
		{"Unsigned", func(t *testing.T, f fixture) {
			put(t, f, "a")
			f.hostile.write(t, forged(f.hostile.events(t)[0], "forged-unsigned"))
			n := f.start()
			halts(t, n, "forged-unsigned", "unsigned")
			resumes(t, f, n)
		}},
		{"UnknownKey", func(t *testing.T, f fixture) {
			put(t, f, "a")
			e, _, err := trust.Sign(attacker, forged(f.hostile.events(t)[0], "forged-key"), trust.Head{Seq: 1, Digest: trust.Digest([]byte("x"))})
			if err != nil {
				t.Fatal(err)
			}
			f.hostile.write(t, e)
			n := f.start()
			halts(t, n, "forged-key", "unknown-key")
			resumes(t, f, n)
		}},
		{"AlteredFields", func(t *testing.T, f fixture) {
			put(t, f, "a")
			e := f.hostile.events(t)[0] // keeps the producer's signature
			e.EventID, e.Key = "forged-altered", "evil"
			f.hostile.write(t, e)
			n := f.start()
			halts(t, n, "forged-altered", "bad-signature")
			resumes(t, f, n)
		}},
		{"ReplayOfApplied", func(t *testing.T, f fixture) {
			put(t, f, "a", "b")
			f.hostile.write(t, f.hostile.events(t)[0]) // the same signed bytes, at a new position
			n := f.start()
			waitFor(t, "the node past the replay", func() bool { return status(t, n).Cursor == 3 })
			if st := status(t, n); st.Halted != nil || st.Applied != 2 {
				t.Fatalf("status %+v: the replay of an applied event must change nothing", st)
			}
			resumes(t, f, n)
		}},
		{"Dropped", func(t *testing.T, f fixture) {
			put(t, f, "a", "b", "c")
			evs := f.hostile.events(t)
			f.hostile.drop(t, evs[1].ControlVersion)
			n := f.start()
			waitFor(t, "the node to apply the first event", func() bool { return status(t, n).Cursor >= evs[0].ControlVersion })
			st := status(t, n)
			if st.State == "gap" {
				// A file feed that says the position was not deleted
				// stops the node on its own (not skippable). Put the
				// file back: nothing was lost.
				t.Logf("the feed reports the deleted position as a gap: %+v", st.Gap)
				return
			}
			halts(t, n, evs[2].EventID, "chain-gap")
			resumes(t, f, n)
			if _, ok, _ := kv.Get(ctx, n.DB(), "b"); ok {
				t.Fatalf("the dropped event was applied")
			}
		}},
		{"Swapped", func(t *testing.T, f fixture) {
			put(t, f, "a", "b", "c")
			evs := f.hostile.events(t)
			// The attacker moves event 2 after event 3: delete it and
			// append its signed bytes again.
			f.hostile.drop(t, evs[1].ControlVersion)
			f.hostile.write(t, evs[1])
			n := f.start()
			waitFor(t, "the node to apply the first event", func() bool { return status(t, n).Cursor >= evs[0].ControlVersion })
			if st := status(t, n); st.State == "gap" {
				t.Logf("the feed reports the deleted position as a gap: %+v", st.Gap)
				return
			}
			halts(t, n, evs[2].EventID, "chain-gap")
			halts(t, n, evs[1].EventID, "chain-replay")
			resumes(t, f, n)
		}},
	}
	for _, backend := range []string{"file", "jetstream"} {
		t.Run(backend, func(t *testing.T) {
			for i, c := range cases {
				t.Run(c.name, func(t *testing.T) { c.run(t, setup(t, backend, i)) })
			}
		})
	}
}

// TestNode_KeyRotation is the configuration rotation of docs/SECURITY.md:
// the nodes trust the old and the new key, the producer restarts with the
// new one, and the chain goes on across the change with no halt; then the
// nodes drop the old key.
func TestNode_KeyRotation(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fcfg := feed.SourceConfig{FileDir: filepath.Join(dir, "feed")}
	art := artifactDir(filepath.Join(dir, "art"))
	oldKey, _ := trust.GenerateKey(rand.Reader)
	newKey, _ := trust.GenerateKey(rand.Reader)
	both, _ := trust.NewKeyring(oldKey.Public(), newKey.Public())
	onlyNew, _ := trust.NewKeyring(newKey.Public())
	producer := func(k *trust.PrivateKey) (*node.Node, func()) {
		return startStoppable(t, &node.Config{DB: filepath.Join(dir, "p.db"), FeedSink: "file", Feed: fcfg, Artifact: art, SigningKey: k})
	}
	puts := func(p *node.Node, from, to int) {
		for i := from; i <= to; i++ {
			if _, err := kv.Put(ctx, p.DB(), p.Store(), fmt.Sprintf("k%d", i), []byte("v")); err != nil {
				t.Fatal(err)
			}
		}
		p.Pump().Notify()
	}
	nodeAt := func(kr *trust.Keyring) (*node.Node, func()) {
		return startStoppable(t, &node.Config{DB: filepath.Join(dir, "n.db"), FeedSource: "file", Feed: fcfg, Artifact: art,
			NodeName: "n", PollInterval: 10 * time.Millisecond, TrustedKeys: kr})
	}
	p, stop := producer(oldKey)
	n, stopNode := nodeAt(both)
	puts(p, 1, 5)
	waitFor(t, "5 events under the old key", func() bool { return status(t, n).Cursor == 5 })
	stop()
	p, stop = producer(newKey)
	puts(p, 6, 10)
	waitFor(t, "10 events across the rotation", func() bool { return status(t, n).Cursor == 10 })
	if st := status(t, n); st.Halted != nil || st.Applied != 10 {
		t.Fatalf("status across the rotation: %+v", st)
	}
	stopNode()
	n, stopNode = nodeAt(onlyNew) // the old key is dropped from the nodes
	defer stopNode()
	puts(p, 11, 12)
	waitFor(t, "12 events with the old key dropped", func() bool { return status(t, n).Cursor == 12 })
	stop()
	// The retired key can no longer sign for the fleet.
	p, stop = producer(oldKey)
	defer stop()
	puts(p, 13, 13)
	waitFor(t, "a security halt on the retired key", func() bool {
		st := status(t, n)
		return st.Halted != nil && st.Halted.Security == "unknown-key"
	})
}

// TestNode_KeyRotationThroughFeed: the nodes trust only the old key; the
// producer announces the new one through the feed ("keys announce"), then
// signs with it; the nodes follow without a halt and without a restart.
func TestNode_KeyRotationThroughFeed(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fcfg := feed.SourceConfig{FileDir: filepath.Join(dir, "feed")}
	art := artifactDir(filepath.Join(dir, "art"))
	oldKey, _ := trust.GenerateKey(rand.Reader)
	newKey, _ := trust.GenerateKey(rand.Reader)
	onlyOld, _ := trust.NewKeyring(oldKey.Public())
	producer := func(k *trust.PrivateKey) (*node.Node, func()) {
		return startStoppable(t, &node.Config{DB: filepath.Join(dir, "p.db"), FeedSink: "file", Feed: fcfg, Artifact: art, SigningKey: k})
	}
	p, stop := producer(oldKey)
	n := start(t, &node.Config{DB: filepath.Join(dir, "n.db"), FeedSource: "file", Feed: fcfg, Artifact: art,
		NodeName: "n", PollInterval: 10 * time.Millisecond, TrustedKeys: onlyOld})
	if _, err := kv.Put(ctx, p.DB(), p.Store(), "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	announce, _ := trust.AddKeyEvent(newKey.Public(), time.Now())
	tx, _ := p.DB().BeginTx(ctx, nil)
	if err := outbox.Append(ctx, tx, announce); err != nil {
		t.Fatal(err)
	}
	tx.Commit()
	p.Pump().Notify()
	waitFor(t, "the announcement applied", func() bool { return status(t, n).Cursor == 2 })
	stop()
	p, stop = producer(newKey)
	defer stop()
	if _, err := kv.Put(ctx, p.DB(), p.Store(), "b", []byte("2")); err != nil {
		t.Fatal(err)
	}
	p.Pump().Notify()
	waitFor(t, "the event by the new key applied", func() bool { return status(t, n).Cursor == 3 })
	if st := status(t, n); st.Halted != nil {
		t.Fatalf("halted across the rotation: %+v", st.Halted)
	}
}

// startStoppable opens and runs a node like start, and returns the function
// that stops and closes it (for tests that restart a node with other
// settings).
func startStoppable(t *testing.T, cfg *node.Config) (*node.Node, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n, err := node.Open(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	return n, func() { cancel(); <-done; n.Close() }
}
