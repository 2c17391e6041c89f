// Package filefleet is the fleet report store of the file feed, registered
// as "file" (the feed backend's name): every node writes its report into
// the feed's own directory, so "controlfeed fleet --feed-dir DIR" finds the
// fleet with nothing more configured.
//
// # Layout
//
// Inside the feed directory (feed.SourceConfig.FileDir), in the
// subdirectory Dir (".nodes", which the file feed ignores: it reads only
// "*.json" names at its top level):
//
//	.nodes/<node>.json          the node's latest fleet.Report (JSON)
//	.nodes/.<node>.json.tmp-*   a report being written
//
// A node name is fleet.ValidateNodeName's alphabet, so it is a safe file
// name as it is. Each report is written atomically: a temporary file in
// .nodes, fsync, rename over <node>.json, fsync of the directory; a reader
// sees the old report or the new one, never a torn one. The file's
// modification time is Entry.SeenAt (the file system's clock), so every
// node and reader sharing the directory should keep their clocks in sync
// within a fraction of the stale threshold. Leftover temporary files (a
// crash between create and rename) are ignored by readers and harmless.
//
// The feed directory must exist (the file feed's Sink creates it); the
// first Put creates .nodes in it. Delete removes <node>.json.
package filefleet

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/controlfeed/controlfeed/fleet"
)

// Name is the store's registered name, the file feed's.
const Name = "file"

// Dir is the store's subdirectory of the feed directory.
const Dir = ".nodes"

func init() {
	fleet.Register(Name, func(_ context.Context, cfg fleet.Config) (fleet.Store, error) {
		return New(cfg.Feed.FileDir)
	})
}

// Store is the file feed's report store. Safe for concurrent use, by
// several processes too (each node writes only its own file).
type Store struct {
	feedDir string
	dir     string
}

var _ fleet.Store = (*Store)(nil)

// New returns the store of the file feed in feedDir, which must exist.
func New(feedDir string) (*Store, error) {
	if feedDir == "" {
		return nil, errors.New("filefleet: no feed directory (set --feed-dir)")
	}
	fi, err := os.Stat(feedDir)
	if err != nil {
		return nil, fmt.Errorf("filefleet: feed directory: %w (is --feed-dir the producer's? its sink creates it)", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("filefleet: feed directory %s is not a directory", feedDir)
	}
	return &Store{feedDir: feedDir, dir: filepath.Join(feedDir, Dir)}, nil
}

// Name returns "file".
func (s *Store) Name() string { return Name }

// Path returns the store's directory (feedDir/.nodes).
func (s *Store) Path() string { return s.dir }

func (s *Store) file(node string) string { return filepath.Join(s.dir, node+".json") }

// Put writes r to .nodes/<node>.json atomically.
func (s *Store) Put(ctx context.Context, r fleet.Report) error {
	b, err := fleet.Encode(r)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Mkdir(s.dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("filefleet: put report of %q: %w", r.Node, err)
	}
	if err := writeAtomic(s.dir, r.Node+".json", b); err != nil {
		return fmt.Errorf("filefleet: put report of %q: %w", r.Node, err)
	}
	return nil
}

// List reads every .nodes/*.json.
func (s *Store) List(ctx context.Context) ([]fleet.Entry, error) {
	ents, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Stat(s.feedDir); err != nil {
			return nil, fmt.Errorf("filefleet: list %s: feed directory: %w", s.dir, err)
		}
		return nil, nil // no node has reported yet
	}
	if err != nil {
		return nil, fmt.Errorf("filefleet: list %s: %w", s.dir, err)
	}
	var out []fleet.Entry
	var errs []error
	for _, de := range ents {
		name := de.Name()
		node, ok := strings.CutSuffix(name, ".json")
		if !ok || strings.HasPrefix(name, ".") || !de.Type().IsRegular() {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e, err := s.read(node)
		if errors.Is(err, fleet.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Report.Node < out[j].Report.Node })
	return out, errors.Join(errs...)
}

func (s *Store) read(node string) (fleet.Entry, error) {
	f, err := os.Open(s.file(node))
	if errors.Is(err, fs.ErrNotExist) {
		return fleet.Entry{}, fmt.Errorf("filefleet: %s: %w", s.file(node), fleet.ErrNotFound)
	}
	if err != nil {
		return fleet.Entry{}, fmt.Errorf("filefleet: read %s: %w", s.file(node), err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fleet.Entry{}, fmt.Errorf("filefleet: read %s: %w", s.file(node), err)
	}
	if fi.Size() > fleet.MaxReportBytes {
		return fleet.Entry{}, fmt.Errorf("filefleet: read %s: %d bytes, over %d: %w", s.file(node), fi.Size(), fleet.MaxReportBytes, fleet.ErrInvalidReport)
	}
	b := make([]byte, fi.Size())
	if _, err := readFull(f, b); err != nil {
		return fleet.Entry{}, fmt.Errorf("filefleet: read %s: %w", s.file(node), err)
	}
	r, err := fleet.Decode(b)
	if err != nil {
		return fleet.Entry{}, fmt.Errorf("filefleet: %s: %w", s.file(node), err)
	}
	if r.Node != node {
		return fleet.Entry{}, fmt.Errorf("filefleet: %s holds the report of node %q: %w", s.file(node), r.Node, fleet.ErrInvalidReport)
	}
	return fleet.Entry{Report: r, SeenAt: fi.ModTime().UTC()}, nil
}

func readFull(f *os.File, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := f.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Get reads one node's report.
func (s *Store) Get(_ context.Context, node string) (fleet.Entry, error) {
	if err := fleet.ValidateNodeName(node); err != nil {
		return fleet.Entry{}, err
	}
	return s.read(node)
}

// Delete removes .nodes/<node>.json.
func (s *Store) Delete(_ context.Context, node string) error {
	if err := fleet.ValidateNodeName(node); err != nil {
		return err
	}
	err := os.Remove(s.file(node))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("filefleet: delete %s: %w", s.file(node), fleet.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("filefleet: delete %s: %w", s.file(node), err)
	}
	if d, err := os.Open(s.dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
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
	if err := f.Chmod(0o644); err != nil {
		return err
	}
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
