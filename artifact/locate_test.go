package artifact_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/controlfeed/controlfeed/artifact"
)

func TestRegisterLocate(t *testing.T) {
	dup := uniq("test-locate-dup")
	f := func(artifact.Config) (string, error) { return "x", nil }
	for name, reg := range map[string]func(){
		"EmptyName": func() { artifact.RegisterLocate("", f) },
		"NilFunc":   func() { artifact.RegisterLocate(uniq("test-locate-nil"), nil) },
		"Duplicate": func() { artifact.RegisterLocate(dup, f) },
	} {
		t.Run(name, func(t *testing.T) {
			if name == "Duplicate" {
				artifact.RegisterLocate(dup, f)
			}
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			reg()
		})
	}
}

func TestLocate(t *testing.T) {
	ok, bad := uniq("test-locate-ok"), uniq("test-locate-bad")
	artifact.RegisterLocate(ok, func(cfg artifact.Config) (string, error) { return "dir=" + cfg.Dir, nil })
	artifact.RegisterLocate(bad, func(artifact.Config) (string, error) { return "", errors.New("no dir") })
	t.Run("OK", func(t *testing.T) {
		loc, err := artifact.Locate(ok, artifact.Config{Dir: "/d"})
		if err != nil || loc != "dir=/d" {
			t.Fatalf("Locate = %q, %v", loc, err)
		}
	})
	t.Run("ErrFunc", func(t *testing.T) {
		_, err := artifact.Locate(bad, artifact.Config{})
		if err == nil || !strings.Contains(err.Error(), `locate store "`+bad+`": no dir`) {
			t.Fatalf("Locate = %v", err)
		}
	})
	t.Run("ErrUnknown", func(t *testing.T) {
		_, err := artifact.Locate(uniq("test-locate-none"), artifact.Config{})
		if err == nil || !strings.Contains(err.Error(), "forgotten import?") || !strings.Contains(err.Error(), "available:") {
			t.Fatalf("Locate = %v", err)
		}
	})
}
