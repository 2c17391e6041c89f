package filestore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/artifacttest"
	"github.com/controlfeed/controlfeed/artifact/filestore"
	"github.com/controlfeed/controlfeed/controlevent"
)

type harness struct {
	dir          string
	restoreQuota func() error // set while SetQuota holds a limit
}

func (h *harness) Open(ctx context.Context, t *testing.T) artifact.Store {
	t.Helper()
	s, err := filestore.New(h.dir, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func (h *harness) path(t *testing.T, ref string) string {
	t.Helper()
	hex := strings.TrimPrefix(ref, controlevent.ChecksumPrefix)
	return filepath.Join(h.dir, "sha256", hex[:2], hex)
}

func (h *harness) Corrupt(ctx context.Context, t *testing.T, ref string) {
	t.Helper()
	p := h.path(t, ref)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("Corrupt %s: %v", ref, err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatalf("Corrupt %s: %v", ref, err)
	}
}

func (h *harness) Remove(ctx context.Context, t *testing.T, ref string) {
	t.Helper()
	if err := os.Remove(h.path(t, ref)); err != nil {
		t.Fatalf("Remove %s: %v", ref, err)
	}
}

// MakeIncomplete cuts the object's file to half its size, as a damaged
// disk or a copy interrupted by another tool leaves it.
func (h *harness) MakeIncomplete(ctx context.Context, t *testing.T, ref string) {
	t.Helper()
	p := h.path(t, ref)
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatalf("MakeIncomplete %s: %v", ref, err)
	}
	if err := os.Truncate(p, fi.Size()/2); err != nil {
		t.Fatalf("MakeIncomplete %s: %v", ref, err)
	}
}

func TestConformance(t *testing.T) {
	artifacttest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) artifacttest.Harness {
		return &harness{dir: t.TempDir()}
	})
}

func newStore(t *testing.T, dir string, opts *filestore.Options) *filestore.Store {
	t.Helper()
	s, err := filestore.New(dir, opts)
	if err != nil {
		t.Fatalf("New(%q): %v", dir, err)
	}
	return s
}

func tmpEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(dir, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestNew(t *testing.T) {
	t.Run("ErrEmptyDir", func(t *testing.T) {
		if _, err := filestore.New("", nil); err == nil || !strings.HasPrefix(err.Error(), "filestore: new") {
			t.Fatalf("New(\"\") = %v, want a filestore: new error", err)
		}
	})
	t.Run("ErrNegativeOptions", func(t *testing.T) {
		for _, o := range []*filestore.Options{{TempGrace: -time.Second}, {BufferSize: -1}} {
			if err := o.Validate(); err == nil {
				t.Errorf("Validate(%+v) = nil, want an error", *o)
			}
			if _, err := filestore.New(t.TempDir(), o); err == nil {
				t.Errorf("New with %+v succeeded", *o)
			}
		}
		var nilOpts *filestore.Options
		if err := nilOpts.Validate(); err != nil {
			t.Errorf("nil Options: Validate() = %v", err)
		}
	})
	t.Run("ErrDirIsFile", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := filestore.New(f, nil); err == nil {
			t.Fatal("New on a regular file succeeded")
		}
	})
	t.Run("CreatesLayout", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "a", "b")
		s := newStore(t, dir, nil)
		for _, sub := range []string{"sha256", "tmp"} {
			if fi, err := os.Stat(filepath.Join(dir, sub)); err != nil || !fi.IsDir() {
				t.Errorf("%s: %v", sub, err)
			}
		}
		if !filepath.IsAbs(s.Dir()) || s.Name() != filestore.Name {
			t.Errorf("Dir() = %q, Name() = %q", s.Dir(), s.Name())
		}
	})
}

func TestRegistered(t *testing.T) {
	dir := t.TempDir()
	s, err := artifact.Open(filestore.Name, artifact.Config{Dir: dir})
	if err != nil {
		t.Fatalf("artifact.Open(%q): %v", filestore.Name, err)
	}
	ref, err := artifact.PutBytes(t.Context(), s, []byte("via the registry"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "sha256", ref[7:9], ref[7:])); err != nil {
		t.Fatalf("object not at the documented path: %v", err)
	}
	if _, err := artifact.Open(filestore.Name, artifact.Config{}); err == nil {
		t.Fatal("artifact.Open with an empty Dir succeeded")
	}
}

func TestStore_Put(t *testing.T) {
	ctx := t.Context()

	t.Run("LayoutAndMode", func(t *testing.T) {
		dir := t.TempDir()
		s := newStore(t, dir, nil)
		b := []byte("layout")
		ref, err := artifact.PutBytes(ctx, s, b)
		if err != nil {
			t.Fatal(err)
		}
		hex := strings.TrimPrefix(ref, "sha256:")
		p := filepath.Join(dir, "sha256", hex[:2], hex)
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("ReadFile(%s) = %q, %v; want %q", p, got, err, b)
		}
		if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o644 {
			t.Errorf("object mode %v, want 0644", fi.Mode().Perm())
		}
		if sp, err := s.Path(ref); err != nil || sp != p {
			t.Errorf("Path(%s) = %q, %v; want %q", ref, sp, err, p)
		}
		if names := tmpEntries(t, dir); len(names) != 0 {
			t.Errorf("tmp/ after Put: %v", names)
		}
	})

	t.Run("NoRenameChurn", func(t *testing.T) {
		dir := t.TempDir()
		s := newStore(t, dir, nil)
		b := []byte("stored once")
		ref, err := artifact.PutBytes(ctx, s, b)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := s.Path(ref)
		before, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if _, err := artifact.PutBytes(ctx, s, b); err != nil {
				t.Fatal(err)
			}
		}
		after, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if !os.SameFile(before, after) {
			t.Fatal("Put of present content replaced the object file")
		}
		if names := tmpEntries(t, dir); len(names) != 0 {
			t.Fatalf("tmp/ after repeated Puts: %v", names)
		}
	})

	t.Run("RepairsTruncatedObject", func(t *testing.T) {
		dir := t.TempDir()
		s := newStore(t, dir, nil)
		b := []byte("will be truncated on disk")
		ref, _ := artifact.PutBytes(ctx, s, b)
		p, _ := s.Path(ref)
		if err := os.Truncate(p, 5); err != nil {
			t.Fatal(err)
		}
		if _, err := artifact.GetBytes(ctx, s, ref, 100); !errors.Is(err, artifact.ErrCorrupt) {
			t.Fatalf("GetBytes of truncated object: %v, want ErrCorrupt", err)
		}
		if _, err := artifact.PutBytes(ctx, s, b); err != nil {
			t.Fatal(err)
		}
		if got, err := artifact.GetBytes(ctx, s, ref, 100); err != nil || !bytes.Equal(got, b) {
			t.Fatalf("GetBytes after re-Put = %q, %v; want %q", got, err, b)
		}
	})

	t.Run("FailedPutRemovesTemp", func(t *testing.T) {
		dir := t.TempDir()
		s := newStore(t, dir, &filestore.Options{BufferSize: 1024})
		boom := errors.New("boom")
		r := io.MultiReader(bytes.NewReader(make([]byte, 5000)), iotestErr{boom})
		_, err := s.Put(ctx, r)
		if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "filestore: put: read content after 5000 bytes") {
			t.Fatalf("Put with failing reader: %v", err)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := s.Put(cctx, bytes.NewReader([]byte("x"))); !errors.Is(err, context.Canceled) {
			t.Fatalf("Put with canceled ctx: %v", err)
		}
		if names := tmpEntries(t, dir); len(names) != 0 {
			t.Fatalf("tmp/ after failed Puts: %v", names)
		}
	})

	t.Run("ErrTmpDirGone", func(t *testing.T) {
		dir := t.TempDir()
		s := newStore(t, dir, nil)
		if err := os.RemoveAll(filepath.Join(dir, "tmp")); err != nil {
			t.Fatal(err)
		}
		_, err := artifact.PutBytes(ctx, s, []byte("x"))
		if err == nil || !strings.HasPrefix(err.Error(), "filestore: put sha256:") || !strings.Contains(err.Error(), ": create temp file: ") {
			t.Fatalf("Put without tmp/: %v", err)
		}
		_, err = s.Put(ctx, bytes.NewReader(make([]byte, filestore.DefaultBufferSize+1)))
		if err == nil || !strings.HasPrefix(err.Error(), "filestore: put: create temp file: ") {
			t.Fatalf("Put of more than one buffer without tmp/: %v", err)
		}
	})
}

type iotestErr struct{ err error }

func (r iotestErr) Read([]byte) (int, error) { return 0, r.err }

func TestStore_Get_HostileRefs(t *testing.T) {
	ctx := t.Context()
	root := t.TempDir()
	dir := filepath.Join(root, "store")
	s := newStore(t, dir, nil)
	// Bait outside the store that a path escape would reach.
	if err := os.WriteFile(filepath.Join(root, "x"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	refs := append([]string{
		"../x", "../../x", "sha256/../../x", "/etc/passwd", filepath.Join(root, "x"),
		"sha256:" + strings.Repeat("../", 21) + "x",
		"sha256:" + strings.Repeat("0", 60) + "/../",
	}, artifacttest.BadRefs...)
	for _, ref := range refs {
		rc, err := s.Get(ctx, ref)
		if err == nil {
			rc.Close()
			t.Errorf("Get(%q) succeeded", ref)
			continue
		}
		if !errors.Is(err, artifact.ErrBadRef) {
			t.Errorf("Get(%q) = %v, want ErrBadRef", ref, err)
		}
		if !strings.HasPrefix(err.Error(), "filestore: ") {
			t.Errorf("Get(%q) error %q lacks the package prefix", ref, err)
		}
		if p, err := s.Path(ref); err == nil || p != "" {
			t.Errorf("Path(%q) = %q, %v; want ErrBadRef", ref, p, err)
		}
	}
	// A directory where an object should be is not returned as content.
	ref := controlevent.Checksum([]byte("dir"))
	p, _ := s.Path(ref)
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if rc, err := s.Get(ctx, ref); err == nil {
		rc.Close()
		t.Errorf("Get of a directory succeeded")
	}
}

func TestStore_Sweep(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := newStore(t, dir, nil)
	tmp := filepath.Join(dir, "tmp")
	old := time.Now().Add(-time.Hour)
	write := func(name string, mtime time.Time) {
		t.Helper()
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	write("put-old1.tmp", old)
	write("put-old2.tmp", old)
	write("put-young.tmp", time.Now())
	write("operator-notes.txt", old) // not ours: left alone
	if err := os.Mkdir(filepath.Join(tmp, "put-dir.tmp"), 0o755); err != nil {
		t.Fatal(err)
	}

	// New sweeps with the default 15-minute grace.
	newStore(t, dir, nil)
	if got, want := strings.Join(tmpEntries(t, dir), ","), "operator-notes.txt,put-dir.tmp,put-young.tmp"; got != want {
		t.Fatalf("tmp/ after New: %s, want %s", got, want)
	}

	// A young file survives a 1-hour threshold, then goes with 0.
	n, err := s.Sweep(ctx, time.Hour)
	if err != nil || n != 0 {
		t.Fatalf("Sweep(1h) = %d, %v; want 0, nil", n, err)
	}
	write("put-young.tmp", time.Now().Add(-time.Minute))
	n, err = s.Sweep(ctx, 0)
	if err != nil || n != 1 {
		t.Fatalf("Sweep(0) = %d, %v; want 1, nil", n, err)
	}
	if got, want := strings.Join(tmpEntries(t, dir), ","), "operator-notes.txt,put-dir.tmp"; got != want {
		t.Fatalf("tmp/ after Sweep(0): %s, want %s", got, want)
	}

	// A custom grace at New.
	write("put-5min.tmp", time.Now().Add(-5*time.Minute))
	newStore(t, dir, &filestore.Options{TempGrace: time.Minute})
	if got, want := strings.Join(tmpEntries(t, dir), ","), "operator-notes.txt,put-dir.tmp"; got != want {
		t.Fatalf("tmp/ after New(TempGrace 1m): %s, want %s", got, want)
	}

	if _, err := s.Sweep(ctx, -time.Second); err == nil {
		t.Error("Sweep(-1s) succeeded")
	}
	write("put-a.tmp", old)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Sweep(cctx, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Sweep with canceled ctx: %v", err)
	}
}

// TestGetBytes_NotRegularOrBadRef checks the fast whole-object read's
// errors that the conformance suite does not reach: a directory where the
// object file should be, and malformed references.
func TestGetBytes_NotRegularOrBadRef(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s, err := filestore.New(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	ref := artifact.RefOf([]byte("x"))
	hex := strings.TrimPrefix(ref, "sha256:")
	if err := os.MkdirAll(filepath.Join(dir, "sha256", hex[:2], hex), 0o755); err != nil {
		t.Fatal(err)
	}
	if b, err := s.GetBytes(ctx, ref, 1<<20); !errors.Is(err, artifact.ErrCorrupt) || b != nil {
		t.Fatalf("GetBytes of a directory = %d bytes, %v; want an error wrapping ErrCorrupt", len(b), err)
	}
	for _, bad := range []string{"", "sha256:", "md5:" + hex, "sha256:../../etc/passwd", strings.ToUpper(ref)} {
		if _, err := s.GetBytes(ctx, bad, 1<<20); !errors.Is(err, artifact.ErrBadRef) {
			t.Errorf("GetBytes(%q) = %v, want an error wrapping ErrBadRef", bad, err)
		}
	}
}
