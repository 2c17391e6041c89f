// Package filecatalog is the snapshot catalog of the file feed, registered
// as "file" (the feed backend's name): it records published snapshots in
// the feed's own directory, so a node that reads the feed finds them with
// nothing more configured.
//
// # Layout
//
// Inside the feed directory (feed.SourceConfig.FileDir), in the
// subdirectory Dir (".snapshots", which the file feed ignores: it reads
// only "*.json" names at its top level):
//
//	.snapshots/latest.json                        the latest Record (JSON)
//	.snapshots/history/<020 cursor>-<16 hex>.json one Record per publish
//	.snapshots/lock                               flock(2) taken by Publish
//
// Latest reads latest.json: one file, O(1) in the number of snapshots.
// Every file is written atomically: a temporary file in the same directory,
// fsync, rename, fsync of the directory; so a crash leaves either the old
// latest.json or the new one, never a torn one. Publish holds an exclusive
// lock on the lock file while it compares and replaces latest.json, so
// concurrent publishers (several processes sharing the directory) never
// move the latest backwards. History keeps the newest HistoryLength
// records; older history files are removed by Publish, and Forget
// removes one (never the latest's).
//
// The feed directory must exist (the file feed's Sink creates it); Publish
// creates .snapshots in it.
package filecatalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/controlfeed/controlfeed/internal/flock"
	"github.com/controlfeed/controlfeed/snapshot"
)

// Name is the catalog's registered name, the file feed's.
const Name = "file"

// Dir is the catalog's subdirectory of the feed directory.
const Dir = ".snapshots"

// HistoryLength is how many records List keeps.
const HistoryLength = 64

// maxRecord bounds a record file read.
const maxRecord = 64 << 10

func init() {
	snapshot.RegisterCatalog(Name, func(ctx context.Context, cfg snapshot.CatalogConfig) (snapshot.Catalog, error) {
		return New(cfg.Feed.FileDir)
	})
}

// Catalog is the file feed's snapshot catalog. Safe for concurrent use by
// goroutines and processes.
type Catalog struct {
	feedDir string
	dir     string
}

var _ snapshot.Catalog = (*Catalog)(nil)

// New returns the catalog of the file feed in feedDir, which must exist.
// It creates nothing.
func New(feedDir string) (*Catalog, error) {
	if feedDir == "" {
		return nil, errors.New("filecatalog: no feed directory (set --feed-dir)")
	}
	fi, err := os.Stat(feedDir)
	if err != nil {
		return nil, fmt.Errorf("filecatalog: feed directory: %w; the file feed's sink (the producer) creates it", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("filecatalog: feed directory %s is not a directory", feedDir)
	}
	return &Catalog{feedDir: feedDir, dir: filepath.Join(feedDir, Dir)}, nil
}

// Name returns "file".
func (c *Catalog) Name() string { return Name }

// Path returns the catalog's directory (feedDir/.snapshots).
func (c *Catalog) Path() string { return c.dir }

// Latest reads latest.json.
func (c *Catalog) Latest(ctx context.Context) (snapshot.Record, error) {
	if err := ctx.Err(); err != nil {
		return snapshot.Record{}, err
	}
	path := filepath.Join(c.dir, "latest.json")
	r, err := readRecord(path)
	if errors.Is(err, fs.ErrNotExist) {
		return snapshot.Record{}, fmt.Errorf("filecatalog: latest in %s: %w (publish one with: controlfeed snapshot publish --db NODE.db --feed-dir %s)", c.feedDir, snapshot.ErrNoSnapshot, c.feedDir)
	}
	return r, err
}

// List reads the history files, newest first.
func (c *Catalog) List(ctx context.Context) ([]snapshot.Record, error) {
	names, err := c.historyNames()
	if err != nil {
		return nil, err
	}
	out := make([]snapshot.Record, 0, len(names))
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r, err := readRecord(filepath.Join(c.dir, "history", n))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed by a concurrent Publish
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	snapshot.SortRecords(out)
	return out, nil
}

// historyNames returns the history file names, newest first.
func (c *Catalog) historyNames() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(c.dir, "history"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("filecatalog: list %s: %w", c.dir, err)
	}
	var names []string
	for _, e := range ents {
		if n := e.Name(); strings.HasSuffix(n, ".json") && !strings.HasPrefix(n, ".") {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	slices.Reverse(names)
	return names, nil
}

// Publish writes r's history file, then, under the lock, replaces
// latest.json if r is at least as new, then trims the history.
func (c *Catalog) Publish(ctx context.Context, r snapshot.Record) error {
	if err := r.Validate(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	hist := filepath.Join(c.dir, "history")
	if err := os.MkdirAll(hist, 0o755); err != nil {
		return fmt.Errorf("filecatalog: publish %s: %w", r.Manifest, err)
	}
	unlock, err := c.lock()
	if err != nil {
		return err
	}
	defer unlock()
	latest, err := c.Latest(ctx)
	switch {
	case errors.Is(err, snapshot.ErrNoSnapshot):
	case err != nil:
		return fmt.Errorf("filecatalog: publish %s: %w", r.Manifest, err)
	case latest.Manifest == r.Manifest:
		return nil
	default:
		if err := snapshot.CheckNewer(latest, r); err != nil {
			return err
		}
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("filecatalog: publish %s: %w", r.Manifest, err)
	}
	b = append(b, '\n')
	if err := writeAtomic(hist, historyName(r), b); err != nil {
		return fmt.Errorf("filecatalog: publish %s: %w", r.Manifest, err)
	}
	if err := writeAtomic(c.dir, "latest.json", b); err != nil {
		return fmt.Errorf("filecatalog: publish %s: %w", r.Manifest, err)
	}
	return c.trim()
}

// trim removes history files beyond HistoryLength.
func (c *Catalog) trim() error {
	names, err := c.historyNames()
	if err != nil || len(names) <= HistoryLength {
		return err
	}
	for _, n := range names[HistoryLength:] {
		if err := os.Remove(filepath.Join(c.dir, "history", n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("filecatalog: trim history: %w", err)
		}
	}
	return nil
}

// lock takes the catalog's exclusive flock.
func (c *Catalog) lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(c.dir, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("filecatalog: lock: %w", err)
	}
	if err := flock.File(f, syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("filecatalog: lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil
}

func readRecord(path string) (snapshot.Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return snapshot.Record{}, err
	}
	defer f.Close()
	var r snapshot.Record
	d := json.NewDecoder(&limited{f: f, n: maxRecord})
	if err := d.Decode(&r); err != nil {
		return snapshot.Record{}, fmt.Errorf("filecatalog: read %s: %w: move the file away and publish again", path, err)
	}
	if err := r.Validate(); err != nil {
		return snapshot.Record{}, fmt.Errorf("filecatalog: read %s: %w", path, err)
	}
	return r, nil
}

type limited struct {
	f *os.File
	n int64
}

func (l *limited) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("record file too large")
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	k, err := l.f.Read(p)
	l.n -= int64(k)
	return k, err
}

// writeAtomic writes b to dir/name: temp file, fsync, rename, directory
// fsync.
func writeAtomic(dir, name string, b []byte) error {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(b); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	ok = true
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

var _ snapshot.Forgetter = (*Catalog)(nil)

// Forget removes r's history file under the catalog's lock. It refuses the
// latest record (latest.json is never removed); an absent record is not an
// error.
func (c *Catalog) Forget(ctx context.Context, r snapshot.Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := os.Stat(c.dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	unlock, err := c.lock()
	if err != nil {
		return err
	}
	defer unlock()
	latest, err := c.Latest(ctx)
	if err != nil && !errors.Is(err, snapshot.ErrNoSnapshot) {
		return fmt.Errorf("filecatalog: forget %s: %w", r.Manifest, err)
	}
	if err == nil && latest.Manifest == r.Manifest {
		return fmt.Errorf("filecatalog: forget %s: %w", r.Manifest, snapshot.ErrLatest)
	}
	if err := os.Remove(filepath.Join(c.dir, "history", historyName(r))); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("filecatalog: forget %s: %w", r.Manifest, err)
	}
	return nil
}

// historyName is r's history file name.
func historyName(r snapshot.Record) string {
	hex := strings.TrimPrefix(r.Manifest, "sha256:")
	return fmt.Sprintf("%020d-%s.json", r.ControlVersion, hex[:min(16, len(hex))])
}
