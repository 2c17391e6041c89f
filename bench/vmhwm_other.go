//go:build !linux

package bench

// vmHWM returns 0: only Linux exposes VmHWM; the parent falls back to
// ru_maxrss.
func vmHWM() int64 { return 0 }
