package main

import (
	"strings"
	"testing"

	"github.com/controlfeed/controlfeed/internal/node"
)

// TestHaltAdvice_SecurityHalt: status offers a security halt only the
// explicit override, never the plain skip that refuses it; an ordinary
// halt still gets the plain skip.
func TestHaltAdvice_SecurityHalt(t *testing.T) {
	sec := haltAdvice(&node.Halt{EventID: "evt-4", Security: "chain-fork", Error: "trust: chain-fork"}, "node.db")
	if !strings.Contains(sec, "controlfeed skip --db node.db --security-override evt-4") || !strings.Contains(sec, "chain-fork") {
		t.Fatalf("security halt advice %q: want the override command and the reason", sec)
	}
	if strings.Contains(sec, "skip --db node.db evt-4") {
		t.Fatalf("security halt advice %q offers the plain skip, which refuses it", sec)
	}
	plain := haltAdvice(&node.Halt{EventID: "evt-5", Error: "handler: boom"}, "node.db")
	if !strings.Contains(plain, "controlfeed skip --db node.db evt-5") || strings.Contains(plain, "override") {
		t.Fatalf("ordinary halt advice %q", plain)
	}
}
