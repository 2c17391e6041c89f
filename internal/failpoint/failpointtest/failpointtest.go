//go:build unix

// Package failpointtest helps tests prove what a kill -9 at a failure point
// leaves behind: it re-runs the test binary as a child process with failure
// points enabled and checks that the child really died by SIGKILL.
package failpointtest

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/controlfeed/controlfeed/internal/failpoint"
)

// Survived is what a child test prints if it ran past the failure point
// that should have killed it; RunKilledChild fails the test when it sees it.
const Survived = "SURVIVED"

// RunKilledChild runs the test named child of the current test binary in a
// new process, with env added to the environment and CONTROLFEED_FAILPOINTS
// set to spec, and fails t unless that process was killed by SIGKILL without
// printing Survived. It returns the child's combined output. The child test
// recognises its role by a variable in env and does nothing otherwise.
func RunKilledChild(t testing.TB, child, spec string, env ...string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+child+"$", "-test.count=1")
	cmd.Env = append(append(os.Environ(), env...), failpoint.EnvSpec+"="+spec)
	out, _ := cmd.CombinedOutput()
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child %s with %s ended with %v, output %q; want it killed by SIGKILL", child, spec, cmd.ProcessState, out)
	}
	if strings.Contains(string(out), Survived) {
		t.Fatalf("child %s ran past the failure point (%s): %q", child, spec, out)
	}
	return string(out)
}
