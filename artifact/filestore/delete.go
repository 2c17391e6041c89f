package filestore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/controlfeed/controlfeed/artifact"
)

var _ artifact.Deleter = (*Store)(nil)

// Delete removes the object ref and syncs its directory. An absent object
// is not an error. A reader holding the object open keeps reading it (the
// file is unlinked, not truncated).
func (s *Store) Delete(ctx context.Context, ref string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("filestore: delete %.80q: %w", ref, err)
	}
	if artifact.ParseRef(ref) != nil {
		return fmt.Errorf("filestore: delete %.80q: %w", ref, artifact.ErrBadRef)
	}
	p := s.path(ref)
	if err := os.Remove(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("filestore: delete %s: %w", ref, err)
	}
	if err := syncDir(filepath.Dir(p)); err != nil {
		return fmt.Errorf("filestore: delete %s: sync directory: %w", ref, err)
	}
	return nil
}
