package chaos

import (
	"os/exec"
	"syscall"
)

// dieWithHarness makes cmd's process get SIGKILL when the harness dies
// (an interrupted "go test", a killed controlfeed-chaos), so that no
// broker, pump or node outlives the run that started it.
func dieWithHarness(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
