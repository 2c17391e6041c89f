package artifacttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/controlevent"
)

// mustPut stores b and fails the test on error.
func mustPut(ctx context.Context, t *testing.T, s artifact.Store, b []byte) string {
	t.Helper()
	ref, err := artifact.PutBytes(ctx, s, b)
	if err != nil {
		t.Fatalf("Put %d bytes: %v", len(b), err)
	}
	return ref
}

// mustGet reads the whole object ref through Get and fails the test on error.
func mustGet(ctx context.Context, t *testing.T, s artifact.Store, ref string) []byte {
	t.Helper()
	rc, err := s.Get(ctx, ref)
	if err != nil {
		t.Fatalf("Get %s: %v", ref, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get %s: read: %v", ref, err)
	}
	return b
}

// wantAbsent checks that ref is not stored.
func wantAbsent(ctx context.Context, t *testing.T, s artifact.Store, ref, why string) {
	t.Helper()
	rc, err := s.Get(ctx, ref)
	if err == nil {
		rc.Close()
		t.Fatalf("Get %s (%s) succeeded, want an error wrapping ErrNotFound", ref, why)
	}
	if !errors.Is(err, artifact.ErrNotFound) {
		t.Fatalf("Get %s (%s): %v, want an error wrapping ErrNotFound", ref, why, err)
	}
}

func testPutGetRoundTrip(ctx context.Context, t *testing.T, h Harness) {
	s := open(ctx, t, h)
	if s.Name() == "" {
		t.Error("Name() is empty")
	}
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	contents := map[string][]byte{
		"one byte":       {0},
		"text":           []byte("hello, fleet\n"),
		"every byte":     all,
		"json":           []byte(`{"tenant":"acme","hosts":["a.example","b.example"]}`),
		"1 MiB + 1":      genBytes(1, 1<<20+1),
		"odd size 70001": genBytes(2, 70001),
	}
	refs := map[string]string{}
	for name, b := range contents {
		refs[name] = mustPut(ctx, t, s, b)
	}
	for name, b := range contents {
		if got := mustGet(ctx, t, s, refs[name]); !bytes.Equal(got, b) {
			t.Errorf("%s: Get returned %d bytes that differ from the %d Put", name, len(got), len(b))
		}
		got, err := artifact.GetBytes(ctx, s, refs[name], int64(len(b)))
		if err != nil {
			t.Errorf("%s: GetBytes: %v", name, err)
		} else if !bytes.Equal(got, b) {
			t.Errorf("%s: GetBytes returned %d bytes that differ from the %d Put", name, len(got), len(b))
		}
	}
	// A reader that yields one byte per Read and then data with io.EOF
	// must be consumed completely.
	b := []byte("short reads and a final read with data and io.EOF")
	ref, err := s.Put(ctx, iotest.DataErrReader(iotest.OneByteReader(bytes.NewReader(b))))
	if err != nil {
		t.Fatalf("Put through a one-byte reader: %v", err)
	}
	if ref != controlevent.Checksum(b) {
		t.Fatalf("Put through a one-byte reader: ref %s, want %s", ref, controlevent.Checksum(b))
	}
	if got := mustGet(ctx, t, s, ref); !bytes.Equal(got, b) {
		t.Fatalf("Get after a one-byte-reader Put: %q, want %q", got, b)
	}
}

func testRefIsSHA256(ctx context.Context, t *testing.T, h Harness) {
	s := open(ctx, t, h)
	for _, b := range [][]byte{[]byte("abc"), genBytes(3, 100_000)} {
		ref := mustPut(ctx, t, s, b)
		if want := controlevent.Checksum(b); ref != want {
			t.Errorf("Put %d bytes: ref %s, want %s", len(b), ref, want)
		}
		if err := artifact.ParseRef(ref); err != nil {
			t.Errorf("ParseRef(Put's ref): %v", err)
		}
		if err := controlevent.VerifyChecksum(b, ref); err != nil {
			t.Errorf("VerifyChecksum(content, ref): %v", err)
		}
	}
	// The well-known sha256 of "abc".
	const abc = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
	if got := mustGet(ctx, t, s, abc); string(got) != "abc" {
		t.Errorf("Get %s = %q, want \"abc\"", abc, got)
	}
}

func testPutIdempotent(ctx context.Context, t *testing.T, h Harness) {
	s := open(ctx, t, h)
	b := genBytes(4, 300_000)
	ref1 := mustPut(ctx, t, s, b)
	ref2 := mustPut(ctx, t, s, b)
	if ref1 != ref2 {
		t.Fatalf("second Put of the same bytes: ref %s, first was %s", ref2, ref1)
	}
	// The same content arriving in different chunks.
	ref3, err := s.Put(ctx, iotest.HalfReader(bytes.NewReader(b)))
	if err != nil {
		t.Fatalf("third Put (half reader): %v", err)
	}
	if ref3 != ref1 {
		t.Fatalf("third Put (half reader): ref %s, first was %s", ref3, ref1)
	}
	if got := mustGet(ctx, t, s, ref1); !bytes.Equal(got, b) {
		t.Fatalf("Get after three Puts returned %d bytes that differ from the %d Put", len(got), len(b))
	}
}

func testEmptyObject(ctx context.Context, t *testing.T, h Harness) {
	s := open(ctx, t, h)
	want := controlevent.Checksum(nil)
	wantAbsent(ctx, t, s, want, "before Put")
	ref, err := s.Put(ctx, bytes.NewReader(nil))
	if err != nil {
		t.Fatalf("Put empty: %v", err)
	}
	if ref != want {
		t.Fatalf("Put empty: ref %s, want %s", ref, want)
	}
	if got := mustGet(ctx, t, s, ref); len(got) != 0 {
		t.Fatalf("Get empty returned %d bytes", len(got))
	}
	got, err := artifact.GetBytes(ctx, s, ref, 0)
	if err != nil || len(got) != 0 {
		t.Fatalf("GetBytes(limit 0) of the empty object = %d bytes, %v; want 0 bytes, nil", len(got), err)
	}
	// Idempotent too.
	if ref2 := mustPut(ctx, t, s, []byte{}); ref2 != want {
		t.Fatalf("second Put empty: ref %s, want %s", ref2, want)
	}
}

func testNotFound(ctx context.Context, t *testing.T, h Harness) {
	s := open(ctx, t, h)
	never := controlevent.Checksum([]byte("never stored"))
	wantAbsent(ctx, t, s, never, "never stored")
	if _, err := artifact.GetBytes(ctx, s, never, 1<<20); !errors.Is(err, artifact.ErrNotFound) {
		t.Fatalf("GetBytes %s: %v, want an error wrapping ErrNotFound", never, err)
	}
	// An object removed behind the store's back is not found either, and
	// Putting it again restores it.
	b := []byte("removed behind the store's back")
	ref := mustPut(ctx, t, s, b)
	h.Remove(ctx, t, ref)
	wantAbsent(ctx, t, s, ref, "after Harness.Remove")
	if again := mustPut(ctx, t, s, b); again != ref {
		t.Fatalf("Put after Remove: ref %s, want %s", again, ref)
	}
	if got := mustGet(ctx, t, s, ref); !bytes.Equal(got, b) {
		t.Fatalf("Get after re-Put: %q, want %q", got, b)
	}
}

// BadRefs are malformed references every Store must reject with ErrBadRef
// without touching its storage. Backends can reuse it in their own
// path-escape tests.
var BadRefs = []string{
	"",
	"../x",
	"/etc/passwd",
	"sha256:ABC",
	"sha256:" + string(bytes.Repeat([]byte("AB"), 32)),                  // uppercase hex
	"sha256:" + string(bytes.Repeat([]byte("a"), 63)),                   // too short
	"sha256:" + string(bytes.Repeat([]byte("a"), 65)),                   // too long
	"sha256:../../../../../../../../../../../../../../../../etc/passwd", // 64 characters, not hex
	"sha256:" + string(bytes.Repeat([]byte("0"), 62)) + "/x",
	"sha256:" + string(bytes.Repeat([]byte("0"), 63)) + "\x00",
	"sha256:\x00" + string(bytes.Repeat([]byte("0"), 63)),
	"sha256:" + string(bytes.Repeat([]byte("0"), 64)) + "\n",
	" sha256:" + string(bytes.Repeat([]byte("0"), 64)),
	"SHA256:" + string(bytes.Repeat([]byte("0"), 64)),
	"md5:d41d8cd98f00b204e9800998ecf8427e",
	string(bytes.Repeat([]byte("0"), 64)), // no prefix
}

func testBadRef(ctx context.Context, t *testing.T, h Harness) {
	s := open(ctx, t, h)
	for _, ref := range BadRefs {
		rc, err := s.Get(ctx, ref)
		if err == nil {
			rc.Close()
			t.Errorf("Get(%q) succeeded, want an error wrapping ErrBadRef", ref)
			continue
		}
		if !errors.Is(err, artifact.ErrBadRef) {
			t.Errorf("Get(%q): %v, want an error wrapping ErrBadRef", ref, err)
		}
		if errors.Is(err, artifact.ErrNotFound) {
			t.Errorf("Get(%q): %v also wraps ErrNotFound; a malformed ref is not a missing object", ref, err)
		}
	}
}

func testCorruptionDetected(ctx context.Context, t *testing.T, h Harness) {
	s := open(ctx, t, h)
	for _, size := range []int64{1, 4096, 1<<20 + 3} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			b := genBytes(uint64(100+size), size)
			ref := mustPut(ctx, t, s, b)
			h.Corrupt(ctx, t, ref)

			rc, err := s.Get(ctx, ref)
			if err == nil {
				_, err = io.Copy(io.Discard, rc)
				rc.Close()
			}
			// A store may detect corruption already in Get; the
			// contract requires it by the end of the stream at the
			// latest.
			if !errors.Is(err, artifact.ErrCorrupt) {
				t.Fatalf("reading corrupted %s to the end: %v, want an error wrapping ErrCorrupt", ref, err)
			}
			got, err := artifact.GetBytes(ctx, s, ref, size)
			if !errors.Is(err, artifact.ErrCorrupt) {
				t.Fatalf("GetBytes corrupted %s: %d bytes, %v; want an error wrapping ErrCorrupt", ref, len(got), err)
			}
			if got != nil {
				t.Fatalf("GetBytes corrupted %s returned %d bytes with its error", ref, len(got))
			}
		})
	}
}

func testConcurrentPutsSameContent(ctx context.Context, t *testing.T, h Harness) {
	s := open(ctx, t, h)
	const n = 16
	b := genBytes(5, 700_000)
	want := controlevent.Checksum(b)
	refs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			refs[i], errs[i] = s.Put(ctx, bytes.NewReader(b))
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("Put #%d: %v", i, errs[i])
		} else if refs[i] != want {
			t.Errorf("Put #%d: ref %s, want %s", i, refs[i], want)
		}
	}
	// Readers racing a final Put see the complete object or none, never
	// a partial one; after all Puts they see it whole.
	if got := mustGet(ctx, t, s, want); !bytes.Equal(got, b) {
		t.Fatalf("Get after concurrent Puts returned %d bytes that differ from the %d Put", len(got), len(b))
	}
}

func testConcurrentPutsDistinctContent(ctx context.Context, t *testing.T, h Harness) {
	s := open(ctx, t, h)
	const n = 16
	contents := make([][]byte, n)
	for i := range contents {
		contents[i] = genBytes(uint64(1000+i), int64(10_000+i*997))
	}
	refs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			refs[i], errs[i] = s.Put(ctx, bytes.NewReader(contents[i]))
			if errs[i] != nil {
				return
			}
			// Get concurrently with other Puts.
			rc, err := s.Get(ctx, refs[i])
			if err != nil {
				errs[i] = fmt.Errorf("Get: %w", err)
				return
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err != nil {
				errs[i] = fmt.Errorf("Get: read: %w", err)
			} else if !bytes.Equal(got, contents[i]) {
				errs[i] = fmt.Errorf("Get returned %d bytes that differ from the %d Put", len(got), len(contents[i]))
			}
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("goroutine %d: %v", i, errs[i])
		} else if want := controlevent.Checksum(contents[i]); refs[i] != want {
			t.Errorf("Put #%d: ref %s, want %s", i, refs[i], want)
		}
	}
}

func testLargeStreamed(ctx context.Context, t *testing.T, h Harness) {
	s := open(ctx, t, h)
	size := int64(64 << 20)
	if testing.Short() {
		size = 8 << 20
	}
	g := newGen(6, size)
	ref, err := s.Put(ctx, g)
	if err != nil {
		t.Fatalf("Put %d streamed bytes: %v", size, err)
	}
	if g.off != size {
		t.Fatalf("Put consumed %d of %d bytes", g.off, size)
	}
	if want := g.ref(); ref != want {
		t.Fatalf("Put %d streamed bytes: ref %s, want %s", size, ref, want)
	}
	rc, err := s.Get(ctx, ref)
	if err != nil {
		t.Fatalf("Get %s: %v", ref, err)
	}
	defer rc.Close()
	hh := controlevent.NewHash()
	n, err := io.Copy(hh, rc)
	if err != nil {
		t.Fatalf("Get %s: read after %d bytes: %v", ref, n, err)
	}
	if n != size {
		t.Fatalf("Get %s: read %d bytes, want %d", ref, n, size)
	}
	if got := controlevent.ChecksumOf(hh); got != ref {
		t.Fatalf("Get %s: content hashes to %s", ref, got)
	}
}

func testCanceledPutLeavesNothing(ctx context.Context, t *testing.T, h Harness) {
	s := open(ctx, t, h)
	const size, at = 4 << 20, 1 << 20

	t.Run("ContextCanceledMidway", func(t *testing.T) {
		g := newGen(7, size)
		cctx := cancelAfter(ctx, g, at)
		ref, err := s.Put(cctx, g)
		if err == nil {
			t.Fatalf("Put with ctx canceled after %d of %d bytes succeeded with ref %s", at, size, ref)
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Put with ctx canceled midway: %v, want an error wrapping context.Canceled", err)
		}
		wantAbsent(ctx, t, s, genRef(7, size), "whole content of a canceled Put")
		wantAbsent(ctx, t, s, g.ref(), "part of a canceled Put that was read")
		wantAbsent(ctx, t, s, genRef(7, at), "first part of a canceled Put")
	})

	t.Run("ReaderFailsMidway", func(t *testing.T) {
		g := newGen(8, size)
		g.failAt, g.failErr = at, errReaderBoom
		ref, err := s.Put(ctx, g)
		if err == nil {
			t.Fatalf("Put with a reader failing after %d bytes succeeded with ref %s", at, ref)
		}
		if !errors.Is(err, errReaderBoom) {
			t.Logf("note: Put's error %q does not wrap the reader's error", err)
		}
		wantAbsent(ctx, t, s, genRef(8, size), "whole content of a failed Put")
		wantAbsent(ctx, t, s, genRef(8, at), "part of a failed Put that was read")
	})

	t.Run("ContextCanceledBefore", func(t *testing.T) {
		b := []byte("put with a context already canceled")
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if ref, err := s.Put(cctx, bytes.NewReader(b)); err == nil {
			t.Fatalf("Put with a canceled ctx succeeded with ref %s", ref)
		}
		wantAbsent(ctx, t, s, controlevent.Checksum(b), "Put with a canceled ctx")
	})

	t.Run("StoreStillWorks", func(t *testing.T) {
		b := genBytes(7, at) // same bytes as the canceled Put's first part
		ref := mustPut(ctx, t, s, b)
		if got := mustGet(ctx, t, s, ref); !bytes.Equal(got, b) {
			t.Fatalf("Get after failed Puts returned %d bytes that differ from the %d Put", len(got), len(b))
		}
	})
}

func testPersistenceAcrossReopen(ctx context.Context, t *testing.T, h Harness) {
	b1 := []byte("written by the first store")
	b2 := genBytes(9, 200_000)
	s1 := h.Open(ctx, t)
	if s1 == nil {
		t.Fatal("Harness.Open returned a nil Store")
	}
	closed := false
	closeS1 := func() error {
		if c, ok := s1.(artifact.Closer); ok && !closed {
			closed = true
			return c.Close()
		}
		return nil
	}
	t.Cleanup(func() { closeS1() })
	ref1 := mustPut(ctx, t, s1, b1)
	ref2 := mustPut(ctx, t, s1, b2)
	if err := closeS1(); err != nil {
		t.Fatalf("Close the first store: %v", err)
	}
	s2 := open(ctx, t, h)
	if got := mustGet(ctx, t, s2, ref1); !bytes.Equal(got, b1) {
		t.Fatalf("reopened store: Get %s = %q, want %q", ref1, got, b1)
	}
	if got := mustGet(ctx, t, s2, ref2); !bytes.Equal(got, b2) {
		t.Fatalf("reopened store: Get %s returned %d bytes that differ from the %d Put", ref2, len(got), len(b2))
	}
	if again := mustPut(ctx, t, s2, b1); again != ref1 {
		t.Fatalf("reopened store: Put of stored bytes: ref %s, want %s", again, ref1)
	}
}

func testGetBytesLimit(ctx context.Context, t *testing.T, h Harness) {
	s := open(ctx, t, h)
	b := genBytes(10, 1000)
	ref := mustPut(ctx, t, s, b)
	got, err := artifact.GetBytes(ctx, s, ref, 999)
	if !errors.Is(err, artifact.ErrTooLarge) {
		t.Fatalf("GetBytes(limit 999) of 1000 bytes: %d bytes, %v; want an error wrapping ErrTooLarge", len(got), err)
	}
	for _, limit := range []int64{1000, 1001, 1 << 30} {
		got, err := artifact.GetBytes(ctx, s, ref, limit)
		if err != nil {
			t.Fatalf("GetBytes(limit %d) of 1000 bytes: %v", limit, err)
		}
		if !bytes.Equal(got, b) {
			t.Fatalf("GetBytes(limit %d) returned %d bytes that differ from the 1000 Put", limit, len(got))
		}
	}
}
