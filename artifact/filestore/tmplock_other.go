//go:build !(darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd)

package filestore

import "os"

// lockTemp does nothing on this platform.
func lockTemp(*os.File) error { return nil }

// claimTemp returns no file and no error: this platform cannot tell a live
// Put's temp file from a crashed one's, so the caller goes by age alone.
func claimTemp(string) (*os.File, error) { return nil, nil }
