package freeport

import (
	"net"
	"strconv"
	"testing"
)

// Addr hands out distinct, bindable ports below the ephemeral range.
func TestAddr(t *testing.T) {
	ceil := ephemeralStart()
	seen := map[string]bool{}
	for range 50 {
		a := MustAddr(t)
		if seen[a] {
			t.Fatalf("Addr returned %s twice", a)
		}
		seen[a] = true
		_, ps, err := net.SplitHostPort(a)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := strconv.Atoi(ps)
		if ceil-floor >= 1000 && (p < floor || p >= ceil) {
			t.Fatalf("Addr returned port %d, want one in [%d, %d)", p, floor, ceil)
		}
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("bind %s: %v", a, err)
		}
		ln.Close()
	}
}
