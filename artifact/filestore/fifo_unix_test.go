//go:build unix

package filestore_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/filestore"
)

// hangBound is how long a test waits for a call that must not block before
// it declares it blocked. It is a liveness bound, not a performance one.
const hangBound = 10 * time.Second

// TestStore_FIFOAtObjectPath: a FIFO where an object should be is refused
// as corrupt at once by Get and GetBytes (opening it for reading would
// block until some process opened it for writing), and a Put of the true
// content replaces it.
func TestStore_FIFOAtObjectPath(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := newStore(t, dir, nil)
	for _, content := range [][]byte{[]byte("small, one buffer"), bytes.Repeat([]byte("large "), filestore.DefaultBufferSize/3)} {
		t.Run(fmt.Sprint(len(content)), func(t *testing.T) {
			ref := artifact.RefOf(content)
			p, _ := s.Path(ref)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Mkfifo(p, 0o644); err != nil {
				t.Fatalf("mkfifo: %v", err)
			}
			// Should a read block in open, a writer releases it.
			t.Cleanup(func() {
				if f, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
					f.Close()
				}
			})
			done := make(chan string, 1)
			go func() {
				var problems []string
				if rc, err := s.Get(ctx, ref); err == nil {
					rc.Close()
					problems = append(problems, "Get of a FIFO succeeded")
				} else if !errors.Is(err, artifact.ErrCorrupt) {
					problems = append(problems, fmt.Sprintf("Get of a FIFO: %v, want ErrCorrupt", err))
				}
				if b, err := s.GetBytes(ctx, ref, 1<<30); !errors.Is(err, artifact.ErrCorrupt) {
					problems = append(problems, fmt.Sprintf("GetBytes of a FIFO: %d bytes, %v; want ErrCorrupt", len(b), err))
				}
				if got, err := artifact.PutBytes(ctx, s, content); err != nil || got != ref {
					problems = append(problems, fmt.Sprintf("Put over a FIFO: %s, %v", got, err))
				} else if b, err := s.GetBytes(ctx, ref, 1<<30); err != nil || !bytes.Equal(b, content) {
					problems = append(problems, fmt.Sprintf("GetBytes after Put over a FIFO: %d bytes, %v", len(b), err))
				}
				done <- strings.Join(problems, "; ")
			}()
			select {
			case problems := <-done:
				if problems != "" {
					t.Fatal(problems)
				}
			case <-time.After(hangBound):
				t.Fatalf("Get of a FIFO at the object path still blocked after %v", hangBound)
			}
			if fi, err := os.Lstat(p); err != nil || !fi.Mode().IsRegular() {
				t.Fatalf("object path after the Put: %v, %v; want a regular file", fi, err)
			}
		})
	}
}
