//go:build unix

package filestore_test

import (
	"context"
	"os/signal"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// quotaMu serializes the tests that set the process's file size limit.
var quotaMu sync.Mutex

// SetQuota limits the size of every file this process writes to max bytes
// with RLIMIT_FSIZE, which the kernel enforces like a full disk: the write
// that would cross the limit is cut short and the next fails (EFBIG, with
// SIGXFSZ ignored). The limit is per file, which the QuotaSetter contract
// allows, and for the whole process, so no test that sets it may run in
// parallel with one that writes big files. The original limit comes back
// with SetQuota(-1) or at the end of the test.
func (h *harness) SetQuota(ctx context.Context, t *testing.T, max int64) {
	t.Helper()
	if max < 0 {
		h.liftQuota(t)
		return
	}
	if h.restoreQuota == nil {
		quotaMu.Lock()
		var orig unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_FSIZE, &orig); err != nil {
			quotaMu.Unlock()
			t.Fatalf("SetQuota: getrlimit: %v", err)
		}
		signal.Ignore(syscall.SIGXFSZ)
		h.restoreQuota = func() error {
			defer quotaMu.Unlock()
			defer signal.Reset(syscall.SIGXFSZ)
			return unix.Setrlimit(unix.RLIMIT_FSIZE, &orig)
		}
		t.Cleanup(func() { h.liftQuota(t) })
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatalf("SetQuota: getrlimit: %v", err)
	}
	lim.Cur = uint64(max)
	if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatalf("SetQuota(%d): setrlimit: %v", max, err)
	}
}

func (h *harness) liftQuota(t *testing.T) {
	t.Helper()
	if h.restoreQuota == nil {
		return
	}
	restore := h.restoreQuota
	h.restoreQuota = nil
	if err := restore(); err != nil {
		t.Errorf("SetQuota(-1): setrlimit: %v", err)
	}
}
