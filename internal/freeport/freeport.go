// Package freeport picks loopback TCP addresses for servers that must be
// told their address before they bind it: the processes the end-to-end
// tests and the chaos harness start with --listen, and the route ports of
// an embedded NATS cluster.
//
// The usual way, listening on port 0 and closing the listener, hands out a
// port from the kernel's ephemeral range, which every other port-0 bind and
// every outgoing connection on the machine draws from too; between the
// close and the server's bind another one can take it ("address already in
// use"). Addr picks below that range instead, where the kernel never
// assigns a port by itself, so only another explicit bind can collide.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// floor is the lowest port Addr hands out: above the well-known and most
// registered service ports.
const floor = 20000

var (
	mu     sync.Mutex
	handed = map[int]bool{} // ports this process was given
)

// Addr returns "127.0.0.1:PORT" for a port nobody listened on when Addr
// checked it, chosen at random between 20000 and the start of the kernel's
// ephemeral range (net.ipv4.ip_local_port_range; 32768 on most systems) and
// never the same twice in one process. Another process using Addr picks
// the same port with a probability of about one in ten thousand per call,
// so a caller that can should still retry its bind on a new address. When
// the ephemeral range leaves no room below it, Addr falls back to a port
// the kernel picks. Safe for concurrent use.
func Addr() (string, error) {
	ceil := ephemeralStart()
	mu.Lock()
	defer mu.Unlock()
	if ceil-floor >= 1000 {
		for range 200 {
			p := floor + rand.IntN(ceil-floor)
			if handed[p] {
				continue
			}
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				continue // in use
			}
			ln.Close()
			handed[p] = true
			return ln.Addr().String(), nil
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("freeport: listen on a loopback port: %w", err)
	}
	defer ln.Close()
	handed[ln.Addr().(*net.TCPAddr).Port] = true
	return ln.Addr().String(), nil
}

// MustAddr is Addr for tests: it fails t when no port can be bound.
func MustAddr(t interface {
	Helper()
	Fatalf(string, ...any)
}) string {
	t.Helper()
	a, err := Addr()
	if err != nil {
		t.Fatalf("%v", err)
	}
	return a
}

// ephemeralStart is the first port of the kernel's ephemeral range, 32768
// when it cannot be read (the Linux default; other systems' ranges start
// higher).
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n <= 0 || n > 65535 {
		return 32768
	}
	return n
}
