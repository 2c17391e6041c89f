package bench

import (
	"syscall"
	"testing"
)

// TestChildPeakKiB: the child's own VmHWM wins over ru_maxrss, which counts
// the parent's memory map shared before exec.
func TestChildPeakKiB(t *testing.T) {
	ru := &syscall.Rusage{Maxrss: 300 << 10}
	if kib, src := childPeakKiB(childResult{VmHWMKiB: 40 << 10}, ru); kib != 40<<10 || src != "child's VmHWM" {
		t.Errorf("with VmHWM: got %d KiB from %q, want %d from the child's VmHWM", kib, src, 40<<10)
	}
	if kib, _ := childPeakKiB(childResult{}, ru); kib != 300<<10 {
		t.Errorf("without VmHWM: got %d KiB, want ru_maxrss %d", kib, 300<<10)
	}
	if kib, _ := childPeakKiB(childResult{}, nil); kib != 0 {
		t.Errorf("without either: got %d KiB, want 0", kib)
	}
}
