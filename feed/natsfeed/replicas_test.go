package natsfeed_test

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/internal/natsembed"
)

// watchCreates counts the JetStream API requests that create or change a
// stream (a KV or Object Store bucket is a stream too), as seen by a core
// subscription on the API subjects.
func watchCreates(t *testing.T, nc *nats.Conn) *atomic.Int64 {
	t.Helper()
	var n atomic.Int64
	for _, subj := range []string{"$JS.API.STREAM.CREATE.>", "$JS.API.STREAM.UPDATE.>"} {
		if _, err := nc.Subscribe(subj, func(*nats.Msg) { n.Add(1) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return &n
}

func streamNames(t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	var names []string
	l := js.StreamNames(t.Context())
	for n := range l.Name() {
		names = append(names, n)
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

// A node started before the producer creates nothing: no feed stream and no
// lease bucket (either would get the node's replicas, R1 when it has no
// --nats-replicas). Poll reports it unavailable, naming ErrNoStream, until
// the producer's Sink has created the stream; then the lease bucket is
// created with the stream's replicas, not the node's.
func TestSource_NeverCreates(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	nc, js := rawJS(t, srv)
	creates := watchCreates(t, nc)
	cfg := testConfig(srv)
	nodeCfg := cfg
	nodeCfg.Replicas = 3 // could not even be created on one server
	observerCfg := cfg
	observerCfg.NodeName = ""
	for _, c := range []feed.NATSConfig{nodeCfg, observerCfg} {
		src := openSource(ctx, t, c)
		for range 3 {
			evs, err := src.Poll(ctx, 0)
			if !errors.Is(err, natsfeed.ErrNoStream) || !errors.Is(err, feed.ErrUnavailable) || len(evs) != 0 {
				t.Fatalf("Poll before the producer (node %q) = %v, %v; want ErrNoStream and feed.ErrUnavailable", c.NodeName, evs, err)
			}
			if !strings.Contains(err.Error(), cfg.Stream) {
				t.Errorf("error %q does not name the stream", err)
			}
		}
	}
	if got := streamNames(t, js); len(got) != 0 || creates.Load() != 0 {
		t.Fatalf("before the producer started: streams %v, %d create/update requests; want none", got, creates.Load())
	}

	sink := openSink(ctx, t, cfg) // the producer, R1
	evs := appendN(ctx, t, sink, 2)
	src := openSource(ctx, t, nodeCfg)
	var got []uint64
	waitUntil(t, func() bool {
		e, err := src.Poll(ctx, 0)
		got = cvs(e)
		return err == nil && len(e) == 2
	})
	if got[1] != evs[1].ControlVersion {
		t.Fatalf("Poll after the producer = %v", got)
	}
	kv, err := js.KeyValue(ctx, natsfeed.LeaseBucket(cfg.Stream))
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas; r != 1 {
		t.Fatalf("lease bucket created with %d replicas, want the stream's 1", r)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	end := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(end) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A producer configured for 3 replicas refuses an existing R1 stream with
// a message naming the nats command that fixes it, before it sends any
// create or update request (on one server an R3 stream could not be created
// anyway: the check must come first), and leaves the stream as it was. The
// same stream with the matching count is accepted.
func TestSink_ReplicasMismatch(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	nc, js := rawJS(t, srv)
	cfg := testConfig(srv)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: cfg.Stream, Subjects: []string{cfg.Subject},
		Storage: jetstream.FileStorage, Duplicates: natsfeed.DefaultDuplicateWindow, Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	creates := watchCreates(t, nc)
	r3 := cfg
	r3.Replicas = 3
	s, err := natsfeed.NewSink(ctx, r3, nil)
	if err == nil {
		s.Close()
		t.Fatal("NewSink with replicas 3 accepted an R1 stream")
	}
	var re *natsfeed.ReplicasError
	if !errors.As(err, &re) || re.Have != 1 || re.Want != 3 {
		t.Fatalf("error %v (%T), want a *ReplicasError 1 vs 3", err, err)
	}
	for _, want := range []string{"nats stream edit " + cfg.Stream + " --replicas 3", "--nats-replicas 1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if n := creates.Load(); n != 0 {
		t.Errorf("NewSink sent %d stream create/update requests, want 0", n)
	}
	st, err := js.Stream(ctx, cfg.Stream)
	if err != nil || st.CachedInfo().Config.Replicas != 1 {
		t.Fatalf("stream after the refusal: %v, %v", st, err)
	}
	openSink(ctx, t, cfg) // replicas 1: accepted
}

// On a three-member cluster the producer's R3 configuration creates an R3
// stream, and a node configured with the default replicas (1) reads it and
// creates its lease bucket as R3, the stream's count.
func TestReplicas_Cluster(t *testing.T) {
	ctx := t.Context()
	members := natsembed.StartClusterForTest(t, 3)
	cfg := testConfig(members[0])
	for _, m := range members[1:] {
		cfg.URLs = append(cfg.URLs, m.ClientURL())
	}
	pcfg := cfg
	pcfg.Replicas = 3
	sink := openSink(ctx, t, pcfg)
	appendN(ctx, t, sink, 3)
	src := openSource(ctx, t, cfg)
	waitUntil(t, func() bool {
		e, err := src.Poll(ctx, 0)
		return err == nil && len(e) == 3
	})
	_, js := rawJS(t, members[1])
	for _, name := range []string{cfg.Stream, "KV_" + natsfeed.LeaseBucket(cfg.Stream)} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if r := st.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("stream %s has %d replicas, want 3", name, r)
		}
	}
	// A second producer with the default count is refused.
	if s, err := natsfeed.NewSink(ctx, cfg, nil); err == nil {
		s.Close()
		t.Fatal("a producer with replicas 1 accepted the R3 stream")
	} else if !strings.Contains(err.Error(), "--nats-replicas 3 to use it") {
		t.Fatalf("error %q does not offer the existing count", err)
	}
}

// A node (or tail) given another subject than the producer's reads nothing
// from a stream that stores none of it: Poll reports it unavailable, naming
// ErrWrongSubject, the stream's subjects and the configured one, instead of
// returning no events as if the feed were empty. With the right subject it
// reads the feed.
func TestSource_WrongSubject(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	cfg := testConfig(srv)
	appendN(ctx, t, openSink(ctx, t, cfg), 2)
	wrong := cfg
	wrong.Subject = cfg.Subject + "x"
	for _, node := range []string{"node-w", ""} {
		wrong.NodeName = node
		src := openSource(ctx, t, wrong)
		evs, err := src.Poll(ctx, 0)
		if !errors.Is(err, natsfeed.ErrWrongSubject) || !errors.Is(err, feed.ErrUnavailable) || len(evs) != 0 {
			t.Fatalf("Poll with subject %q (node %q) = %v, %v; want ErrWrongSubject, unavailable", wrong.Subject, node, cvs(evs), err)
		}
		if !strings.Contains(err.Error(), wrong.Subject) || !strings.Contains(err.Error(), "--nats-subject") {
			t.Errorf("error %q does not name the subject and the flag", err)
		}
	}
	if evs, err := openSource(ctx, t, cfg).Poll(ctx, 0); err != nil || len(evs) != 2 {
		t.Fatalf("Poll with the producer's subject = %v, %v", cvs(evs), err)
	}
}
