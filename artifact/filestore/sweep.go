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

var (
	// errTempClaimed: a Put found its new temp file locked by a Sweep.
	errTempClaimed = errors.New("temp file claimed by a sweep")
	// errTempLive: a Sweep found a temp file locked by a live Put.
	errTempLive = errors.New("temp file held by a live Put")
)

// Sweep removes the temp files in the store's tmp directory that a Put
// left behind when its process died, and returns how many it removed. A
// temp file is removed only when both hold: its modification time is more
// than olderThan ago, and no live Put holds it. Every Put holds an
// exclusive flock(2) on its temp file from creation until the file has its
// final name or is removed, so a slow Put in this or another process
// sharing the directory (even on another machine, where the file system
// supports flock) is never disturbed, however old its file looks. Where
// flock is unavailable (Windows, Plan 9, a file system without it) only the
// age is checked: pick olderThan well above the time the slowest Put can
// take; New uses Options.TempGrace.
//
// A negative olderThan is an error. Files that are not Put temp files are
// left alone. A temp file that cannot be checked or removed is logged and
// skipped; the error is reserved for an unreadable tmp directory or a done
// ctx, which is checked between files.
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
		if s.sweepOne(filepath.Join(dir, name), fi) {
			removed++
		}
	}
	return removed, nil
}

// sweepOne removes the temp file at path, found older than the threshold,
// unless a live Put holds it, and reports whether it did. The file is
// removed while Sweep holds its lock, and only if path still names the file
// locked.
func (s *Store) sweepOne(path string, fi fs.FileInfo) bool {
	rel := filepath.Join(tmpDir, filepath.Base(path))
	f, err := claimTemp(path)
	switch {
	case errors.Is(err, errTempLive):
		s.opts.Logger.Debug("filestore: sweep: temp file belongs to a live Put; left alone", "file", rel, "modified", fi.ModTime())
		return false
	case errors.Is(err, fs.ErrNotExist):
		return false // its Put finished or failed meanwhile
	case err != nil:
		s.opts.Logger.Warn("filestore: sweep: cannot tell whether a live Put holds the temp file; left alone", "file", rel, "err", err)
		return false
	}
	if f != nil {
		defer f.Close()
		if !sameFile(f, path) {
			return false
		}
	}
	if err := os.Remove(path); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			s.opts.Logger.Warn("filestore: sweep: remove temp file", "file", rel, "err", err)
		}
		return false
	}
	s.opts.Logger.Info("filestore: sweep: removed temp file", "file", rel, "modified", fi.ModTime())
	return true
}
