package filestore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/filestore"
	"github.com/controlfeed/controlfeed/internal/failpoint"
	"github.com/controlfeed/controlfeed/internal/failpoint/failpointtest"
)

// childDirEnv, when set, makes TestFailpointChild act as the child process
// of a kill test: it Puts fpContent into a store in that directory, in
// chunks of fpChunk bytes, with whatever CONTROLFEED_FAILPOINTS the parent
// set.
const childDirEnv = "FILESTORE_FAILPOINT_CHILD_DIR"

const fpChunk = 16

var fpContent = bytes.Repeat([]byte("0123456789abcdef"), 8) // 8 chunks

func TestFailpointChild(t *testing.T) {
	dir := os.Getenv(childDirEnv)
	if dir == "" {
		t.Skip("only runs as the child of a failpoint kill test")
	}
	s, err := filestore.New(dir, &filestore.Options{BufferSize: fpChunk})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := s.Put(context.Background(), bytes.NewReader(fpContent))
	fmt.Printf(failpointtest.Survived+" Put = %s, %v\n", ref, err)
}

func tempFiles(t *testing.T, dir string) []os.DirEntry {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	return ents
}

// A kill in the middle of writing leaves no object under the ref, only a
// partial temp file, which Sweep removes.
func TestFailpoint_MidWriteKill(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	failpointtest.RunKilledChild(t, "TestFailpointChild", failpoint.FilestoreMidWrite+"=exit", childDirEnv+"="+dir)

	s, err := filestore.New(dir, nil) // default TempGrace: the fresh temp file stays
	if err != nil {
		t.Fatal(err)
	}
	ref := artifact.RefOf(fpContent)
	if _, err := s.Get(ctx, ref); !errors.Is(err, artifact.ErrNotFound) {
		t.Fatalf("Get after the kill = %v; want ErrNotFound", err)
	}
	tmp := tempFiles(t, dir)
	if len(tmp) != 1 {
		t.Fatalf("%d temp files after the kill, want 1", len(tmp))
	}
	if fi, err := tmp[0].Info(); err != nil || fi.Size() != fpChunk {
		t.Fatalf("temp file %v, %v; want a partial file of %d bytes", fi, err, fpChunk)
	}
	if n, err := s.Sweep(ctx, 0); err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1 removed", n, err)
	}
	if tmp := tempFiles(t, dir); len(tmp) != 0 {
		t.Fatalf("%d temp files after Sweep", len(tmp))
	}
	if got, err := s.Put(ctx, bytes.NewReader(fpContent)); err != nil || got != ref {
		t.Fatalf("Put after restart = %s, %v", got, err)
	}
}

// An injected error fails the Put cleanly: no object, no temp file.
func TestFailpoint_MidWriteError(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := filestore.New(dir, &filestore.Options{BufferSize: fpChunk})
	if err != nil {
		t.Fatal(err)
	}
	if err := failpoint.Enable(failpoint.FilestoreMidWrite + "=1*enospc"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(failpoint.Disable)
	if _, err := s.Put(ctx, bytes.NewReader(fpContent)); !errors.Is(err, syscall.ENOSPC) || !strings.HasPrefix(err.Error(), "filestore: put: write tmp/") {
		t.Fatalf("Put = %v; want the injected ENOSPC", err)
	}
	if _, err := s.Get(ctx, artifact.RefOf(fpContent)); !errors.Is(err, artifact.ErrNotFound) {
		t.Fatalf("Get = %v; want ErrNotFound", err)
	}
	if tmp := tempFiles(t, dir); len(tmp) != 0 {
		t.Fatalf("%d temp files left by a failed Put", len(tmp))
	}
	// The point fires once per Put, empty content included.
	if err := failpoint.Enable(failpoint.FilestoreMidWrite + "=error"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, bytes.NewReader(nil)); !errors.Is(err, failpoint.ErrInjected) {
		t.Fatalf("Put of empty content = %v; want the injected error", err)
	}
	if n := failpoint.Fired(failpoint.FilestoreMidWrite); n != 1 {
		t.Fatalf("fired %d times for one Put", n)
	}
	// ...and once for content of many chunks.
	if err := failpoint.Enable(failpoint.FilestoreMidWrite + "=sleep(0s)"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, bytes.NewReader(fpContent)); err != nil {
		t.Fatal(err)
	}
	if n := failpoint.Fired(failpoint.FilestoreMidWrite); n != 1 {
		t.Fatalf("fired %d times for one Put of %d chunks", n, len(fpContent)/fpChunk)
	}
}
