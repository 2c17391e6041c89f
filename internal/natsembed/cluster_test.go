package natsembed_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/internal/natsembed"
)

// TestCluster_R3 starts three members, waits for their JetStream cluster,
// creates an R3 stream through one member, publishes through another and
// reads back through the third: the stream is placed on all three.
func TestCluster_R3(t *testing.T) {
	members := natsembed.StartClusterForTest(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := func(m *natsembed.Server) jetstream.JetStream {
		nc, err := nats.Connect(m.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
	st, err := js(members[0]).CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3"},
		Storage: jetstream.FileStorage, Replicas: 3})
	if err != nil {
		t.Fatalf("create R3 stream: %v", err)
	}
	info := st.CachedInfo()
	if info.Config.Replicas != 3 || info.Cluster == nil || info.Cluster.Name != "test" || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream placement: replicas %d, cluster %+v", info.Config.Replicas, info.Cluster)
	}
	for i := range 3 {
		if _, err := js(members[1]).Publish(ctx, "r3", []byte{byte('a' + i)}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	cons, err := js(members[2]).OrderedConsumer(ctx, "R3", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(3, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	for m := range batch.Messages() {
		got = append(got, m.Data()...)
	}
	if string(got) != "abc" {
		t.Fatalf("read back %q, want %q", got, "abc")
	}
	for _, m := range members {
		if !strings.HasPrefix(m.ClusterAddr(), "127.0.0.1:") {
			t.Errorf("member %s cluster address %q", m.Name(), m.ClusterAddr())
		}
	}
}

func TestCluster_Validate(t *testing.T) {
	dir := t.TempDir()
	for name, o := range map[string]natsembed.Options{
		"NameWithoutListen":   {StoreDir: dir, ClusterName: "c"},
		"RoutesWithoutListen": {StoreDir: dir, Routes: []string{"nats-route://127.0.0.1:6222"}},
		"NoClusterName":       {StoreDir: dir, ServerName: "a", ClusterListen: "127.0.0.1:0", Routes: []string{"nats-route://127.0.0.1:6222"}},
		"NoServerName":        {StoreDir: dir, ClusterName: "c", ClusterListen: "127.0.0.1:0", Routes: []string{"nats-route://127.0.0.1:6222"}},
		"NoRoutes":            {StoreDir: dir, ServerName: "a", ClusterName: "c", ClusterListen: "127.0.0.1:0"},
		"BadRoute":            {StoreDir: dir, ServerName: "a", ClusterName: "c", ClusterListen: "127.0.0.1:0", Routes: []string{"127.0.0.1:6222"}},
		"BadRoutePort":        {StoreDir: dir, ServerName: "a", ClusterName: "c", ClusterListen: "127.0.0.1:0", Routes: []string{"nats-route://h:x"}},
		"BadClusterListen":    {StoreDir: dir, ServerName: "a", ClusterName: "c", ClusterListen: "nohost", Routes: []string{"nats-route://h:1"}},
	} {
		t.Run(name, func(t *testing.T) {
			if err := o.Validate(); err == nil {
				t.Fatal("Validate succeeded, want an error")
			}
		})
	}
}
