//go:build !(darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd)

package node

// PumpLockSuffix is appended to Config.DB to name the pump's lock file (not
// used on this platform).
const PumpLockSuffix = ".pump.lock"

// pumpLock does nothing on this platform, which has no flock(2): one pump
// per producer database is then the operator's to ensure.
type pumpLock struct{}

func lockPump(string) (*pumpLock, error) { return &pumpLock{}, nil }

func (*pumpLock) unlock() error { return nil }
