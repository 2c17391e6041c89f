package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls cond until it returns true, failing the test after a
// generous deadline. This waits for progress; it asserts nothing about speed.
func waitFor(t testing.TB, deadline time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("gave up after %v waiting for %s", deadline, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runBinary runs the built controlfeed binary (see TestMain) with args and
// env appended to a minimal environment, and returns its combined output and
// exit code. It skips the test with -short, where no binary is built.
func runBinary(t *testing.T, env []string, stdin string, args ...string) (string, int) {
	t.Helper()
	if binary == "" {
		t.Skip("needs the controlfeed binary; not built with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	default:
		t.Fatalf("controlfeed %s: %v\n%s", strings.Join(args, " "), err, out)
		return "", -1
	}
}

// treeDigest returns a digest per path under root (root itself may be a
// file): the sha256 of each regular file's bytes, "dir" for a directory,
// and "missing" for a root that does not exist. Two calls around a command
// compare equal when the command changed nothing.
func treeDigest(t *testing.T, root string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && path == root {
			got[path] = "missing"
			return nil
		}
		if err != nil {
			return err
		}
		if d.IsDir() {
			got[path] = "dir"
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		got[path] = fmt.Sprintf("%x", sha256.Sum256(b))
		return nil
	})
	if err != nil {
		t.Fatalf("digest %s: %v", root, err)
	}
	return got
}

// assertUnchanged fails the test when the tree under root differs from
// before (a map from treeDigest).
func assertUnchanged(t *testing.T, root string, before map[string]string) {
	t.Helper()
	after := treeDigest(t, root)
	if !maps.Equal(before, after) {
		t.Errorf("%s changed:\nbefore %v\nafter  %v", root, before, after)
	}
}
