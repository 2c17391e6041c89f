//go:build unix

package filestore_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/filestore"
)

// waitTemp waits until the store's only temp file holds size bytes, so the
// Put is blocked reading and writes nothing more, and returns its path.
func waitTemp(t *testing.T, dir string, size int64) string {
	t.Helper()
	deadline := time.Now().Add(hangBound)
	for {
		names := tmpEntries(t, dir)
		if len(names) == 1 {
			p := filepath.Join(dir, "tmp", names[0])
			if fi, err := os.Stat(p); err == nil && fi.Size() == size {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no temp file of %d bytes after %v: tmp/ holds %v", size, hangBound, names)
		}
		time.Sleep(time.Millisecond)
	}
}

// age makes the file at p look an hour old, as a Put's file does when its
// reader is slow.
func age(t *testing.T, p string) {
	t.Helper()
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
}

// checkSweepSpares sweeps dir from another store, with the default grace
// (at New) and with none, and fails if the temp file at p is removed.
func checkSweepSpares(t *testing.T, dir, p string) {
	t.Helper()
	other := newStore(t, dir, &filestore.Options{TempGrace: time.Minute})
	if n, err := other.Sweep(t.Context(), 0); err != nil || n != 0 {
		t.Fatalf("Sweep(0) from another store = %d, %v; want 0 removed: the temp file belongs to a live Put", n, err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("temp file of a live Put after the sweeps: %v", err)
	}
}

// TestStore_Sweep_SparesLivePut: a Put whose reader is slow keeps its temp
// file however old it looks: another store sharing the directory, sweeping
// at New and with a zero threshold, leaves it alone, and the Put completes.
// An abandoned temp file of the same age is still removed.
func TestStore_Sweep_SparesLivePut(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := newStore(t, dir, &filestore.Options{BufferSize: 1024})
	content := bytes.Repeat([]byte("0123456789abcdef"), 1024) // 16 KiB, 16 chunks
	pr, pw := io.Pipe()
	result := make(chan error, 1)
	var ref string
	go func() {
		var err error
		ref, err = s.Put(ctx, pr)
		pr.CloseWithError(err)
		result <- err
	}()
	const first = 4096
	if _, err := pw.Write(content[:first]); err != nil {
		t.Fatal(err)
	}
	p := waitTemp(t, dir, first)
	age(t, p)
	checkSweepSpares(t, dir, p)

	if _, err := pw.Write(content[first:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if err := <-result; err != nil {
		t.Fatalf("Put after the sweeps: %v", err)
	}
	if want := artifact.RefOf(content); ref != want {
		t.Fatalf("Put: ref %s, want %s", ref, want)
	}
	if b, err := s.GetBytes(ctx, ref, 1<<20); err != nil || !bytes.Equal(b, content) {
		t.Fatalf("GetBytes: %d bytes, %v", len(b), err)
	}
	if names := tmpEntries(t, dir); len(names) != 0 {
		t.Fatalf("tmp/ after the Put: %v", names)
	}

	// A temp file nobody holds, as a killed Put leaves it, goes.
	orphan := filepath.Join(dir, "tmp", "put-orphan.tmp")
	if err := os.WriteFile(orphan, content[:first], 0o600); err != nil {
		t.Fatal(err)
	}
	age(t, orphan)
	if n, err := s.Sweep(ctx, time.Minute); err != nil || n != 1 {
		t.Fatalf("Sweep of an abandoned temp file = %d, %v; want 1 removed", n, err)
	}
}

// slowPutChildEnv, when set to a store directory, makes TestSlowPutChild
// Put its standard input there and print the reference.
const slowPutChildEnv = "FILESTORE_SLOW_PUT_CHILD_DIR"

func TestSlowPutChild(t *testing.T) {
	dir := os.Getenv(slowPutChildEnv)
	if dir == "" {
		t.Skip("only runs as the child of TestStore_Sweep_SparesLivePutOfAnotherProcess")
	}
	s, err := filestore.New(dir, &filestore.Options{BufferSize: 1024})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := s.Put(context.Background(), os.Stdin)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("REF", ref)
}

// TestStore_Sweep_SparesLivePutOfAnotherProcess is TestStore_Sweep_SparesLivePut
// with the slow Put in another process, as when a long snapshot upload
// shares the directory with short-lived commands that each sweep at New.
func TestStore_Sweep_SparesLivePutOfAnotherProcess(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	newStore(t, dir, nil)
	content := bytes.Repeat([]byte("fedcba9876543210"), 1024)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestSlowPutChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), slowPutChildEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	const first = 4096
	if _, err := stdin.Write(content[:first]); err != nil {
		t.Fatal(err)
	}
	p := waitTemp(t, dir, first)
	age(t, p)
	checkSweepSpares(t, dir, p)

	if _, err := stdin.Write(content[first:]); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child Put: %v; output:\n%s", err, out.String())
	}
	want := artifact.RefOf(content)
	var got string
	for sc := bufio.NewScanner(&out); sc.Scan(); {
		if r, ok := strings.CutPrefix(sc.Text(), "REF "); ok {
			got = r
		}
	}
	if got != want {
		t.Fatalf("child Put: ref %q, want %s; output:\n%s", got, want, out.String())
	}
	s := newStore(t, dir, nil)
	if b, err := s.GetBytes(ctx, want, 1<<20); err != nil || !bytes.Equal(b, content) {
		t.Fatalf("GetBytes of the child's object: %d bytes, %v", len(b), err)
	}
}
