//go:build !unix

package filestore_test

import (
	"context"
	"testing"
)

// SetQuota skips: limiting the size of a directory or a file needs
// RLIMIT_FSIZE, which only Unix systems have.
func (h *harness) SetQuota(ctx context.Context, t *testing.T, max int64) {
	t.Skip("filestore: no way to limit the storage of a test directory on this platform (RLIMIT_FSIZE is Unix only)")
}
