package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestNATSServer_Cluster runs three "controlfeed nats-server" processes as
// one cluster (one configured by environment variables, two by flags),
// waits for clustered JetStream, creates an R3 stream, publishes and reads
// it back: a replicated broker needs nothing but this binary.
func TestNATSServer_Cluster(t *testing.T) {
	if binary == "" {
		t.Skip("needs the controlfeed binary; not built with -short")
	}
	dir := t.TempDir()
	var client, routes []string
	var cluster []string
	for range 3 {
		client = append(client, freeAddr(t))
		c := freeAddr(t)
		cluster = append(cluster, c)
		routes = append(routes, "nats-route://"+c)
	}
	for i := range 3 {
		name := fmt.Sprintf("cf%d", i+1)
		args := []string{"nats-server", "--listen", client[i], "--store", filepath.Join(dir, name)}
		env := []string{"PATH=" + os.Getenv("PATH")}
		if i == 0 {
			env = append(env, "CONTROLFEED_SERVER_NAME="+name, "CONTROLFEED_CLUSTER_NAME=cf",
				"CONTROLFEED_CLUSTER_LISTEN="+cluster[i], "CONTROLFEED_ROUTES="+strings.Join(routes, ","))
		} else {
			args = append(args, "--server-name", name, "--cluster-name", "cf", "--cluster-listen", cluster[i],
				"--routes", strings.Join(routes, ", "))
		}
		logf := filepath.Join(dir, name+".log")
		f, err := os.Create(logf)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(binary, args...)
		cmd.Env, cmd.Stdout, cmd.Stderr = env, f, f
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait(); f.Close() }()
		t.Cleanup(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			if err := <-done; err != nil {
				b, _ := os.ReadFile(logf)
				t.Errorf("%s: %v\n%s", name, err, b)
			}
		})
		waitFor(t, 30*time.Second, name+" ready", func() bool {
			b, _ := os.ReadFile(logf)
			return strings.Contains(string(b), "nats-server ready: nats://"+client[i])
		})
	}
	urls := "nats://" + strings.Join(client, ",nats://")
	nc, err := nats.Connect(urls)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var st jetstream.Stream
	waitFor(t, 60*time.Second, "an R3 stream to be created (the cluster to form)", func() bool {
		rctx, c := context.WithTimeout(ctx, 2*time.Second)
		defer c()
		st, err = js.CreateStream(rctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3"},
			Storage: jetstream.FileStorage, Replicas: 3})
		return err == nil
	})
	if info := st.CachedInfo(); info.Cluster == nil || info.Cluster.Name != "cf" || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream placement: %+v", info.Cluster)
	}
	if _, err := js.Publish(ctx, "r3", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	// Read it back through each member.
	for i, addr := range client {
		nc, err := nats.Connect("nats://" + addr)
		if err != nil {
			t.Fatal(err)
		}
		js, _ := jetstream.New(nc)
		var msg *jetstream.RawStreamMsg
		s, err := js.Stream(ctx, "R3")
		if err == nil {
			msg, err = s.GetLastMsgForSubject(ctx, "r3")
		}
		nc.Close()
		if err != nil || string(msg.Data) != "hello" {
			t.Fatalf("member %d: last message %v, %v", i+1, msg, err)
		}
	}
}

// A cluster member needs a name of its own, and the cluster options go
// together: mistakes are usage errors before anything starts.
func TestNATSServer_ClusterUsage(t *testing.T) {
	store := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--cluster-listen", "127.0.0.1:0", "--cluster-name", "c", "--routes", "nats-route://127.0.0.1:6222"}, "--server-name"},
		{[]string{"--cluster-listen", "127.0.0.1:0", "--server-name", "a", "--routes", "nats-route://127.0.0.1:6222"}, "ClusterName"},
		{[]string{"--cluster-listen", "127.0.0.1:0", "--server-name", "a", "--cluster-name", "c"}, "Routes"},
		{[]string{"--cluster-listen", "127.0.0.1:0", "--server-name", "a", "--cluster-name", "c", "--routes", "127.0.0.1:6222"}, "nats-route://host:port"},
		{[]string{"--routes", "nats-route://127.0.0.1:6222"}, "ClusterListen"},
	} {
		_, _, err := run(t, nil, "", append([]string{"nats-server", "--store", store, "--listen", "127.0.0.1:0"}, tc.args...)...)
		if err == nil || !isUsage(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("nats-server %q: error %v, want a usage error mentioning %q", tc.args, err, tc.want)
		}
	}
}
