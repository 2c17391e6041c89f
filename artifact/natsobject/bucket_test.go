package natsobject_test

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/natsobject"
	"github.com/controlfeed/controlfeed/internal/natsembed"
)

func rawJS(t *testing.T, srv *natsembed.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// watchCreates counts stream create and update requests (an Object Store
// bucket is a stream) seen on the JetStream API subjects.
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

// A node's store (no Create) opened before the producer creates no bucket,
// whatever its Replicas: Get and Put fail with ErrNoBucket, which is not
// artifact.ErrNotFound (the applier must wait, not halt). Once the
// producer's store has created the bucket, the node's store uses it.
func TestStore_NodeNeverCreatesBucket(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	nc, js := rawJS(t, srv)
	creates := watchCreates(t, nc)
	cfg := artifact.NATSConfig{URLs: []string{srv.ClientURL()}, Bucket: "art"}
	node, err := natsobject.New(ctx, cfg, &natsobject.Options{SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatalf("New on a missing bucket: %v", err)
	}
	defer node.Close()
	ref := "sha256:" + strings.Repeat("ab", 32)
	for range 2 {
		_, err := node.Get(ctx, ref)
		if !errors.Is(err, natsobject.ErrNoBucket) || errors.Is(err, artifact.ErrNotFound) {
			t.Fatalf("Get before the producer: %v; want ErrNoBucket, not ErrNotFound", err)
		}
		if _, err := artifact.PutBytes(ctx, node, []byte("x")); !errors.Is(err, natsobject.ErrNoBucket) {
			t.Fatalf("Put before the producer: %v; want ErrNoBucket", err)
		}
	}
	if _, err := js.ObjectStore(ctx, "art"); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("the node's store created the bucket: %v", err)
	}
	if n := creates.Load(); n != 0 {
		t.Fatalf("the node's store sent %d create/update requests, want 0", n)
	}

	pcfg := cfg
	pcfg.Create = true
	producer, err := natsobject.New(ctx, pcfg, &natsobject.Options{SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	ref, err = artifact.PutBytes(ctx, producer, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := artifact.GetBytes(ctx, node, ref, 1<<20)
	if err != nil || string(got) != "hello" {
		t.Fatalf("node Get after the producer created the bucket: %q, %v", got, err)
	}
}

// The producer's store refuses an existing bucket with other replicas,
// naming the nats command that fixes it, before any create request (on one
// server an R3 bucket cannot be created: the comparison must come first);
// and a memory-backed bucket. The matching count is accepted.
func TestStore_ProducerChecksBucket(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	nc, js := rawJS(t, srv)
	if _, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "r1", Storage: jetstream.FileStorage, Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "mem", Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	creates := watchCreates(t, nc)
	open := func(bucket string, replicas int) error {
		s, err := natsobject.New(ctx, artifact.NATSConfig{URLs: []string{srv.ClientURL()}, Bucket: bucket, Replicas: replicas, Create: true},
			&natsobject.Options{SpoolDir: t.TempDir()})
		if err == nil {
			s.Close()
		}
		return err
	}
	err := open("r1", 3)
	var re *natsobject.ReplicasError
	if !errors.As(err, &re) || re.Have != 1 || re.Want != 3 {
		t.Fatalf("New with replicas 3 on an R1 bucket: %v (%T), want a *ReplicasError 1 vs 3", err, err)
	}
	for _, want := range []string{"nats stream edit OBJ_r1 --replicas 3", "--nats-replicas 1", `"r1"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if err := open("mem", 1); err == nil || !strings.Contains(err.Error(), "memory storage") {
		t.Errorf("New on a memory bucket: %v, want a refusal", err)
	}
	if n := creates.Load(); n != 0 {
		t.Errorf("the refused opens sent %d create/update requests, want 0", n)
	}
	if err := open("r1", 1); err != nil {
		t.Errorf("New with the matching replicas: %v", err)
	}
}

// On a three-member cluster the producer's store creates an R3 bucket and a
// node's store (default replicas) reads from it.
func TestStore_Cluster(t *testing.T) {
	ctx := t.Context()
	members := natsembed.StartClusterForTest(t, 3)
	var urls []string
	for _, m := range members {
		urls = append(urls, m.ClientURL())
	}
	producer, err := natsobject.New(ctx, artifact.NATSConfig{URLs: urls, Bucket: "r3", Replicas: 3, Create: true},
		&natsobject.Options{SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	ref, err := artifact.PutBytes(ctx, producer, []byte("replicated"))
	if err != nil {
		t.Fatal(err)
	}
	node, err := natsobject.New(ctx, artifact.NATSConfig{URLs: urls[2:], Bucket: "r3"}, &natsobject.Options{SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	if got, err := artifact.GetBytes(ctx, node, ref, 1<<20); err != nil || string(got) != "replicated" {
		t.Fatalf("node Get: %q, %v", got, err)
	}
	_, js := rawJS(t, members[1])
	st, err := js.Stream(ctx, "OBJ_r3")
	if err != nil || st.CachedInfo().Config.Replicas != 3 {
		t.Fatalf("bucket stream: %v, %v; want 3 replicas", st, err)
	}
}
