package natsembed

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/internal/freeport"
)

// StartForTest starts a server for t on a random local port with its store in
// t.TempDir(), and shuts it down when the test ends. It fails the test if the
// server does not start. Restart it on the same store and address with
// RestartForTest.
func StartForTest(t testing.TB) *Server {
	t.Helper()
	return startForTest(t, Options{StoreDir: t.TempDir()})
}

// StartWithAuthForTest is StartForTest with a server that requires user and
// password from every client.
func StartWithAuthForTest(t testing.TB, user, password string) *Server {
	t.Helper()
	return startForTest(t, Options{StoreDir: t.TempDir(), User: user, Password: password})
}

// RestartForTest shuts s down and starts a new server on the same address and
// store directory, so clients connected to s reconnect to it and find its
// streams. The new server is shut down when the test ends.
func RestartForTest(t testing.TB, s *Server) *Server {
	t.Helper()
	return StopForTest(t, s)()
}

// StartClusterForTest starts a cluster of n members on random local ports
// (cluster "test", servers "s1".."sn", stores in t.TempDir()), each routed
// to all, waits until their JetStream cluster is ready for R-n streams
// (WaitClusterReady, at most 30s) and shuts them down when the test ends.
func StartClusterForTest(t testing.TB, n int) []*Server {
	t.Helper()
	ports := make([]string, n)
	routes := make([]string, n)
	for i := range n {
		p, err := freeport.Addr()
		if err != nil {
			t.Fatalf("natsembed: pick a cluster port: %v", err)
		}
		ports[i] = p
		routes[i] = "nats-route://" + ports[i]
	}
	members := make([]*Server, n)
	for i := range n {
		members[i] = startForTest(t, Options{StoreDir: t.TempDir(), ServerName: fmt.Sprintf("s%d", i+1),
			ClusterName: "test", ClusterListen: ports[i], Routes: routes})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := WaitClusterReady(ctx, members...); err != nil {
		t.Fatalf("%v", err)
	}
	return members
}

func startForTest(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := Start(opts)
	if err != nil {
		t.Fatalf("natsembed: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// StopForTest shuts s down and returns a function that starts a new server
// on the same address and store directory (as RestartForTest does at once),
// so a test can keep the broker away for a while. The new server is shut
// down when the test ends.
func StopForTest(t testing.TB, s *Server) (start func() *Server) {
	t.Helper()
	opts := s.opts
	opts.Listen = s.Addr()
	if opts.ClusterListen != "" {
		opts.ClusterListen = s.ClusterAddr()
	}
	s.Shutdown()
	return func() *Server {
		t.Helper()
		return startForTest(t, opts)
	}
}
