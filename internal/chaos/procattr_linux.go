package chaos

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"syscall"
)

// dieWithHarness makes cmd's process get SIGKILL when the harness dies
// (an interrupted "go test", a killed controlfeed-chaos), so that no
// broker, pump or node outlives the run that started it.
func dieWithHarness(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// processStopped reports whether process pid is stopped by a signal
// (state T in /proc/PID/stat), or gone.
func processStopped(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true // gone: it cannot publish either
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && (b[i+2] == 'T' || b[i+2] == 't' || b[i+2] == 'Z' || b[i+2] == 'X')
}
