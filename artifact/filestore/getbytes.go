package filestore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/controlevent"
)

// GetBytes reads the whole object ref into memory and verifies it, with the
// contract of artifact.GetBytes (artifact.BytesGetter): ErrNotFound,
// ErrTooLarge when the file is larger than limit bytes, ErrCorrupt when the
// bytes do not hash to ref or the path is not a regular file, ErrBadRef. It
// opens, stats, reads and closes the file once each (where the platform
// allows it, without an *os.File), which is what makes the applier's
// catch-up of many small payloads cheaper than Get + io.ReadAll. Safe for
// concurrent use.
func (s *Store) GetBytes(ctx context.Context, ref string, limit int64) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("filestore: get %.80q: %w", ref, err)
	}
	if artifact.ParseRef(ref) != nil {
		return nil, fmt.Errorf("filestore: get %.80q: %w", ref, artifact.ErrBadRef)
	}
	p := s.path(ref)
	b, err := readFile(p, limit)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("filestore: get %s: %w", ref, artifact.ErrNotFound)
	case errors.Is(err, errNotRegular):
		return nil, fmt.Errorf("filestore: get %s: %s is not a regular file: %w", ref, p, artifact.ErrCorrupt)
	case errors.Is(err, errTooLarge):
		return nil, fmt.Errorf("filestore: get %s: larger than the %d-byte limit: %w", ref, limit, artifact.ErrTooLarge)
	case err != nil:
		return nil, fmt.Errorf("filestore: get %s: %w", ref, err)
	}
	if got := controlevent.Checksum(b); got != ref {
		return nil, fmt.Errorf("filestore: get %s: %d bytes read hash to %s: %w", ref, len(b), got, artifact.ErrCorrupt)
	}
	return b, nil
}

var (
	errNotRegular = errors.New("not a regular file")
	errTooLarge   = errors.New("larger than the limit")
)
