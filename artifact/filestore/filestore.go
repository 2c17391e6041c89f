package filestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/controlevent"
)

// Name is the name this backend is registered under with package artifact.
const Name = "file"

const (
	objectsDir = "sha256"
	tmpDir     = "tmp"
	tmpPrefix  = "put-"
	tmpSuffix  = ".tmp"

	// DefaultTempGrace is the default Options.TempGrace.
	DefaultTempGrace = 15 * time.Minute
	// DefaultBufferSize is the default Options.BufferSize.
	DefaultBufferSize = 256 << 10

	objectPerm = 0o644
	dirPerm    = 0o755
)

func init() {
	artifact.Register(Name, func(cfg artifact.Config) (artifact.Store, error) {
		return New(cfg.Dir, &Options{Logger: cfg.Logger})
	})
	artifact.RegisterLocate(Name, func(cfg artifact.Config) (string, error) { return Locate(cfg.Dir) })
}

// Locate returns the location of the store New(dir, ...) opens, without
// opening or creating anything: dir made absolute and cleaned, with its
// symbolic links resolved when it exists (so two paths to one directory
// have one location). It is the store's artifact.LocateFunc. An empty dir
// is an error.
func Locate(dir string) (string, error) {
	if dir == "" {
		return "", errors.New("filestore: locate: empty directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("filestore: locate %q: %w", dir, err)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		return real, nil
	}
	return abs, nil
}

var _ artifact.Store = (*Store)(nil)

// Options tunes a Store. A nil *Options and zero fields select the documented
// defaults.
type Options struct {
	// TempGrace is the minimum age of a leftover temp file that New removes.
	// A temp file that a live Put holds is never removed, whatever its age
	// (see Sweep); the grace also spares younger files where that cannot be
	// told (no flock). Zero means DefaultTempGrace (15 minutes); negative is
	// invalid.
	TempGrace time.Duration

	// BufferSize is the size of the chunks Put reads and writes; ctx is
	// checked between chunks. Zero means DefaultBufferSize (256 KiB);
	// negative is invalid.
	BufferSize int

	// Logger receives a record for each temp file swept and each failure to
	// sweep one. Nil discards.
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.TempGrace == 0 {
		o.TempGrace = DefaultTempGrace
	}
	if o.BufferSize == 0 {
		o.BufferSize = DefaultBufferSize
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports whether o is usable: TempGrace and BufferSize must not be
// negative. A nil *Options is valid.
func (o *Options) Validate() error {
	if o == nil {
		return nil
	}
	if o.TempGrace < 0 {
		return fmt.Errorf("filestore: options: TempGrace %v is negative", o.TempGrace)
	}
	if o.BufferSize < 0 {
		return fmt.Errorf("filestore: options: BufferSize %d is negative", o.BufferSize)
	}
	return nil
}

// Store is a content-addressed artifact store in a local directory. It is
// safe for concurrent use by multiple goroutines and by multiple processes
// sharing the directory. It holds no open resources, so it has no Close.
type Store struct {
	dir  string
	opts Options
	bufs sync.Pool
}

// New opens the store in dir, creating dir, dir/sha256 and dir/tmp if they
// do not exist, and removes the temp files crashed Puts left there more than
// opts.TempGrace ago, sparing those live Puts hold (see Sweep; a failure to
// remove one is logged, not returned). An empty dir is an error; opts may be
// nil.
func New(dir string, opts *Options) (*Store, error) {
	if dir == "" {
		return nil, errors.New("filestore: new: empty directory")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	o.setDefaults()
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("filestore: new %q: %w", dir, err)
	}
	for _, d := range []string{abs, filepath.Join(abs, objectsDir), filepath.Join(abs, tmpDir)} {
		if err := os.MkdirAll(d, dirPerm); err != nil {
			return nil, fmt.Errorf("filestore: new %q: %w", dir, err)
		}
	}
	s := &Store{dir: abs, opts: o}
	s.bufs.New = func() any { b := make([]byte, o.BufferSize); return &b }
	if _, err := s.Sweep(context.Background(), o.TempGrace); err != nil {
		return nil, fmt.Errorf("filestore: new %q: %w", dir, err)
	}
	return s, nil
}

// Dir returns the absolute path of the store directory.
func (s *Store) Dir() string { return s.dir }

// Name returns "file".
func (s *Store) Name() string { return Name }

// Path returns the file that holds (or would hold) the object ref. The error
// wraps artifact.ErrBadRef if ref is malformed; the result is always inside
// the store directory.
func (s *Store) Path(ref string) (string, error) {
	if artifact.ParseRef(ref) != nil {
		return "", fmt.Errorf("filestore: path %.80q: %w", ref, artifact.ErrBadRef)
	}
	return s.path(ref), nil
}

// path is Path for a ref known to be well-formed.
func (s *Store) path(ref string) string {
	hex := strings.TrimPrefix(ref, controlevent.ChecksumPrefix)
	return filepath.Join(s.dir, objectsDir, hex[:2], hex)
}

// Get opens the object ref. The error wraps artifact.ErrBadRef if ref is
// malformed (nothing on disk is touched) and artifact.ErrNotFound if there is
// no such object. Anything but a regular file at the object's path (a
// directory, a FIFO) is refused with an error wrapping artifact.ErrCorrupt
// without blocking: it is opened with O_NONBLOCK, or checked before it is
// opened where there is no such flag. The returned stream verifies the
// content while it is read: the Read that reaches the end returns an error
// wrapping artifact.ErrCorrupt instead of io.EOF if the file does not hash to
// ref. The caller must Close it. ctx bounds only the opening of the file.
func (s *Store) Get(ctx context.Context, ref string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("filestore: get %.80q: %w", ref, err)
	}
	if artifact.ParseRef(ref) != nil {
		return nil, fmt.Errorf("filestore: get %.80q: %w", ref, artifact.ErrBadRef)
	}
	p := s.path(ref)
	f, _, err := openObject(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("filestore: get %s: %w", ref, artifact.ErrNotFound)
	case errors.Is(err, errNotRegular):
		return nil, fmt.Errorf("filestore: get %s: %s is not a regular file: %w", ref, p, artifact.ErrCorrupt)
	case err != nil:
		return nil, fmt.Errorf("filestore: get %s: %w", ref, err)
	}
	return &object{Reader: artifact.VerifyReader(f, ref), f: f}, nil
}

type object struct {
	io.Reader
	f *os.File
}

func (o *object) Close() error { return o.f.Close() }

// syncDir fsyncs a directory so that entries created or renamed in it
// survive a power loss. Windows cannot open directories for syncing; there
// the rename itself is the best available.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}
