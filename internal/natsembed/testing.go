package natsembed

import (
	"testing"
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
	addr := s.Addr()
	dir := s.storeDir
	s.Shutdown()
	return startForTest(t, Options{Listen: addr, StoreDir: dir})
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
