package filestore_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/filestore"
)

func TestLocate(t *testing.T) {
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "arts")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	t.Chdir(base)
	for name, in := range map[string]string{
		"Absolute":  dir,
		"Unclean":   base + "/x/../arts/",
		"Relative":  "arts",
		"Symlinked": link,
	} {
		t.Run(name, func(t *testing.T) {
			got, err := filestore.Locate(in)
			if err != nil || got != dir {
				t.Fatalf("Locate(%q) = %q, %v; want %q", in, got, err, dir)
			}
		})
	}
	t.Run("Missing", func(t *testing.T) {
		got, err := filestore.Locate("nope/../other")
		if want := filepath.Join(base, "other"); err != nil || got != want {
			t.Fatalf("Locate = %q, %v; want %q", got, err, want)
		}
		if _, err := os.Stat(got); !os.IsNotExist(err) {
			t.Fatalf("Locate created %s", got)
		}
	})
	t.Run("ErrEmpty", func(t *testing.T) {
		if _, err := filestore.Locate(""); err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("Registered", func(t *testing.T) {
		got, err := artifact.Locate(filestore.Name, artifact.Config{Dir: link})
		if err != nil || got != dir {
			t.Fatalf("artifact.Locate = %q, %v; want %q", got, err, dir)
		}
	})
}
