//go:build unix

package failpoint

import (
	"os"
	"syscall"
	"time"
)

// kill sends SIGKILL to this process and waits for it to land. (It sleeps
// rather than blocking in select{} so the runtime never mistakes the wait
// for a deadlock.)
func kill() {
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	for {
		time.Sleep(time.Hour)
	}
}
