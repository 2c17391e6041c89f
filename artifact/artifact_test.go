package artifact_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/artifacttest"
	"github.com/controlfeed/controlfeed/controlevent"
)

// TestConformance_Reference runs the conformance suite against the in-memory
// reference store, so a failure here is a bug in the suite or the seam
// helpers, not in a backend.
func TestConformance_Reference(t *testing.T) {
	artifacttest.RunConformanceTests(t, func(context.Context, *testing.T) artifacttest.Harness {
		return artifacttest.NewMemStore().Harness()
	})
}

// runID makes registered names unique per test run, so -count=N works with
// the process-wide registry.
var runID atomic.Int64

func uniq(name string) string { return fmt.Sprintf("%s-%d", name, runID.Add(1)) }

func TestRegister(t *testing.T) {
	dup, never := uniq("test-dup"), uniq("test-nil")
	ctor := func(artifact.Config) (artifact.Store, error) { return artifacttest.NewMemStore(), nil }
	mustPanic := func(name string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s: no panic", name)
			}
		}()
		f()
	}
	mustPanic("EmptyName", func() { artifact.Register("", ctor) })
	mustPanic("NilConstructor", func() { artifact.Register(never, nil) })
	artifact.Register(dup, ctor)
	mustPanic("Duplicate", func() { artifact.Register(dup, ctor) })
	if slices.Contains(artifact.Stores(), never) {
		t.Error("a panicking Register left its name registered")
	}
}

func TestOpen(t *testing.T) {
	a, b := uniq("test-a"), uniq("test-b")
	var got artifact.Config
	artifact.Register(b, func(cfg artifact.Config) (artifact.Store, error) { got = cfg; return artifacttest.NewMemStore(), nil })
	artifact.Register(a, func(artifact.Config) (artifact.Store, error) { return nil, errors.New("no disk") })

	t.Run("OK", func(t *testing.T) {
		s, err := artifact.Open(b, artifact.Config{Dir: "/d"})
		if err != nil || s == nil || got.Dir != "/d" {
			t.Fatalf("Open = %v, %v; constructor saw %+v", s, err, got)
		}
	})
	t.Run("ErrConstructor", func(t *testing.T) {
		_, err := artifact.Open(a, artifact.Config{})
		if err == nil || err.Error() != fmt.Sprintf("artifact: open store %q: no disk", a) {
			t.Fatalf("Open = %v", err)
		}
	})
	t.Run("ErrUnknown", func(t *testing.T) {
		_, err := artifact.Open("nope", artifact.Config{})
		if err == nil {
			t.Fatal("Open of an unknown name succeeded")
		}
		msg := err.Error()
		for _, want := range []string{`"nope"`, "forgotten import?", a, b, "file"} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q does not contain %q", msg, want)
			}
		}
	})
	t.Run("StoresSorted", func(t *testing.T) {
		names := artifact.Stores()
		if !slices.IsSorted(names) || !slices.Contains(names, a) || !slices.Contains(names, b) {
			t.Fatalf("Stores() = %v", names)
		}
	})
}

func TestParseRef(t *testing.T) {
	good := []string{controlevent.Checksum(nil), artifact.RefOf([]byte("x")), "sha256:" + strings.Repeat("f", 64)}
	for _, ref := range good {
		if err := artifact.ParseRef(ref); err != nil {
			t.Errorf("ParseRef(%q) = %v", ref, err)
		}
	}
	for _, ref := range append(artifacttest.BadRefs, "sha256:"+strings.Repeat("g", 64), "sha256:"+strings.Repeat("0", 200)) {
		err := artifact.ParseRef(ref)
		if !errors.Is(err, artifact.ErrBadRef) {
			t.Errorf("ParseRef(%q) = %v, want ErrBadRef", ref, err)
			continue
		}
		if !strings.HasPrefix(err.Error(), "artifact: reference ") || len(err.Error()) > 200 {
			t.Errorf("ParseRef(%q) error %q: want a short message starting with the package", ref, err)
		}
	}
}

func TestRefOf(t *testing.T) {
	if got, want := artifact.RefOf([]byte("abc")), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; got != want {
		t.Fatalf("RefOf(abc) = %s, want %s", got, want)
	}
}

func TestVerifyReader(t *testing.T) {
	b := []byte("verified content")
	ref := artifact.RefOf(b)

	t.Run("OK", func(t *testing.T) {
		got, err := io.ReadAll(iotest.OneByteReader(artifact.VerifyReader(bytes.NewReader(b), ref)))
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("ReadAll = %q, %v", got, err)
		}
		if err := iotest.TestReader(artifact.VerifyReader(bytes.NewReader(b), ref), b); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("DataWithEOF", func(t *testing.T) {
		got, err := io.ReadAll(artifact.VerifyReader(iotest.DataErrReader(bytes.NewReader(b)), ref))
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("ReadAll = %q, %v", got, err)
		}
	})
	for name, data := range map[string][]byte{
		"ErrCorruptChanged":   []byte("verified contenT"),
		"ErrCorruptTruncated": b[:len(b)-1],
		"ErrCorruptLonger":    append(slices.Clone(b), '!'),
		"ErrCorruptEmpty":     nil,
	} {
		t.Run(name, func(t *testing.T) {
			r := artifact.VerifyReader(bytes.NewReader(data), ref)
			_, err := io.ReadAll(r)
			if !errors.Is(err, artifact.ErrCorrupt) {
				t.Fatalf("ReadAll = %v, want ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), ref) {
				t.Errorf("error %q does not name the reference", err)
			}
			// The error is sticky: no later Read reports io.EOF.
			if n, err2 := r.Read(make([]byte, 8)); n != 0 || !errors.Is(err2, artifact.ErrCorrupt) {
				t.Fatalf("Read after the error = %d, %v", n, err2)
			}
		})
	}
	t.Run("ErrFromSourceSticky", func(t *testing.T) {
		boom := errors.New("disk error")
		r := artifact.VerifyReader(iotest.ErrReader(boom), ref)
		for range 2 {
			if _, err := r.Read(make([]byte, 8)); !errors.Is(err, boom) || errors.Is(err, artifact.ErrCorrupt) {
				t.Fatalf("Read = %v, want the source's error", err)
			}
		}
	})
}

func TestGetBytes(t *testing.T) {
	ctx := t.Context()
	s := artifacttest.NewMemStore()
	b := []byte("0123456789")
	ref, err := artifact.PutBytes(ctx, s, b)
	if err != nil || ref != artifact.RefOf(b) {
		t.Fatalf("PutBytes = %s, %v", ref, err)
	}
	if got, err := artifact.GetBytes(ctx, s, ref, 10); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("GetBytes(limit 10) = %q, %v", got, err)
	}
	if _, err := artifact.GetBytes(ctx, s, ref, 9); !errors.Is(err, artifact.ErrTooLarge) {
		t.Fatalf("GetBytes(limit 9) = %v, want ErrTooLarge", err)
	}
	// No overflow of limit+1: the largest limit means "no limit".
	if got, err := artifact.GetBytes(ctx, s, ref, math.MaxInt64); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("GetBytes(limit MaxInt64) = %q, %v; want %q", got, err, b)
	}
	boom := errors.New("unreachable")
	s.GetFunc = func(context.Context, string) (io.ReadCloser, error) { return nil, boom }
	if _, err := artifact.GetBytes(ctx, s, ref, 10); !errors.Is(err, boom) {
		t.Fatalf("GetBytes with failing Get = %v", err)
	}
	closed := false
	s.GetFunc = func(context.Context, string) (io.ReadCloser, error) {
		return closeFunc{Reader: iotest.TimeoutReader(bytes.NewReader(b)), close: func() { closed = true }}, nil
	}
	if _, err := artifact.GetBytes(ctx, s, ref, 100); !errors.Is(err, iotest.ErrTimeout) {
		t.Fatalf("GetBytes with failing stream = %v", err)
	}
	if !closed {
		t.Fatal("GetBytes did not close the stream")
	}
	s.PutFunc = func(context.Context, io.Reader) (string, error) { return "", boom }
	if _, err := artifact.PutBytes(ctx, s, b); !errors.Is(err, boom) {
		t.Fatalf("PutBytes with failing Put = %v", err)
	}
}

type closeFunc struct {
	io.Reader
	close func()
}

func (c closeFunc) Close() error { c.close(); return nil }
