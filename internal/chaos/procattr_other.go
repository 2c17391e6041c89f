//go:build !linux

package chaos

import "os/exec"

// dieWithHarness is a no-op where the parent's death cannot be tied to
// the child's.
func dieWithHarness(*exec.Cmd) {}

// processStopped cannot tell here; the caller's sleep has to do.
func processStopped(int) bool { return true }
