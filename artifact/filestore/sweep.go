package filestore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Sweep removes the temp files in the store's tmp directory whose
// modification time is more than olderThan ago, and returns how many it
// removed. Temp files are left by a Put interrupted by a crash; a younger
// one may belong to a Put running right now in this or another process, and
// removing it makes that Put fail (it does not corrupt anything: the object
// is then simply not stored). So pick olderThan well above the time the
// slowest Put can take; New uses Options.TempGrace. A negative olderThan is an
// error. Files that are not Put temp files are left alone. A temp file that
// cannot be removed is logged and skipped; the error is reserved for an
// unreadable tmp directory or a done ctx, which is checked between files.
func (s *Store) Sweep(ctx context.Context, olderThan time.Duration) (removed int, err error) {
	if olderThan < 0 {
		return 0, fmt.Errorf("filestore: sweep: olderThan %v is negative", olderThan)
	}
	dir := filepath.Join(s.dir, tmpDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("filestore: sweep %s: %w", dir, err)
	}
	cutoff := time.Now().Add(-olderThan)
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return removed, fmt.Errorf("filestore: sweep %s: %w", dir, err)
		}
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasPrefix(name, tmpPrefix) || !strings.HasSuffix(name, tmpSuffix) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile: its Put finished or failed
		}
		if !fi.ModTime().Before(cutoff) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				s.opts.Logger.Warn("filestore: sweep: remove temp file", "file", filepath.Join(tmpDir, name), "err", err)
			}
			continue
		}
		removed++
		s.opts.Logger.Info("filestore: sweep: removed temp file", "file", filepath.Join(tmpDir, name), "modified", fi.ModTime())
	}
	return removed, nil
}
