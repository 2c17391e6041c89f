package artifacttest

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/controlevent"
)

// damagedReadTimeout bounds a read of a damaged object. A store must report
// the damage as soon as it can see it; the bound only turns a store that
// waits for a timeout instead into a failure rather than a hung test.
const damagedReadTimeout = 20 * time.Second

// wantStreamed reads object ref through Get, streaming, and checks that it
// is complete: size bytes hashing to ref.
func wantStreamed(ctx context.Context, t *testing.T, s artifact.Store, ref string, size int64, why string) {
	t.Helper()
	rc, err := s.Get(ctx, ref)
	if err != nil {
		t.Fatalf("Get %s (%s): %v", ref, why, err)
	}
	defer rc.Close()
	h := controlevent.NewHash()
	n, err := io.Copy(h, rc)
	if err != nil {
		t.Fatalf("Get %s (%s): read after %d bytes: %v", ref, why, n, err)
	}
	if n != size {
		t.Fatalf("Get %s (%s): %d bytes, want %d", ref, why, n, size)
	}
	if got := controlevent.ChecksumOf(h); got != ref {
		t.Fatalf("Get %s (%s): content hashes to %s", ref, why, got)
	}
}

// readErr reads object ref to the end through Get and returns the first
// error, from Get or from the stream.
func readErr(ctx context.Context, s artifact.Store, ref string) error {
	rc, err := s.Get(ctx, ref)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, rc)
	return err
}

// testFailedPutRetried: a Put whose reader fails midway is retried with the
// whole content, as a producer does; the retry stores the complete object,
// whatever the first attempt left behind.
func testFailedPutRetried(ctx context.Context, t *testing.T, h Harness) {
	s := open(ctx, t, h)
	const size = 3 << 20
	for i, failAt := range []int64{1, 70_001, 1 << 20, size - 1} {
		t.Run(fmt.Sprint(failAt), func(t *testing.T) {
			seed := uint64(20 + i)
			g := newGen(seed, size)
			g.failAt, g.failErr = failAt, errReaderBoom
			if ref, err := s.Put(ctx, g); err == nil {
				t.Fatalf("Put with a reader failing after %d of %d bytes succeeded with ref %s", failAt, size, ref)
			}
			want := genRef(seed, size)
			wantAbsent(ctx, t, s, want, "failed Put")
			ref, err := s.Put(ctx, newGen(seed, size))
			if err != nil {
				t.Fatalf("retried Put of the whole content: %v", err)
			}
			if ref != want {
				t.Fatalf("retried Put: ref %s, want %s", ref, want)
			}
			wantStreamed(ctx, t, s, ref, size, "after the retry")
			wantStreamed(ctx, t, open(ctx, t, h), ref, size, "another store, after the retry")
		})
	}
}

// testCorruptObjectRepairedByPut: an object whose stored bytes no longer
// hash to its reference does not count as present. Putting the true bytes
// again replaces it, so readers get good data again.
func testCorruptObjectRepairedByPut(ctx context.Context, t *testing.T, h Harness) {
	s := open(ctx, t, h)
	for _, size := range []int64{1, 4096, 300_000, 1<<20 + 3} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			b := genBytes(uint64(200+size), size)
			ref := mustPut(ctx, t, s, b)
			h.Corrupt(ctx, t, ref)
			if err := readErr(ctx, s, ref); !errors.Is(err, artifact.ErrCorrupt) {
				t.Fatalf("reading corrupted %s: %v, want an error wrapping ErrCorrupt", ref, err)
			}
			if again := mustPut(ctx, t, s, b); again != ref {
				t.Fatalf("re-Put: ref %s, want %s", again, ref)
			}
			if got := mustGet(ctx, t, s, ref); !bytes.Equal(got, b) {
				t.Fatalf("Get after the re-Put returned %d bytes that differ from the %d Put: the corrupt object was kept", len(got), len(b))
			}
			got, err := artifact.GetBytes(ctx, s, ref, size)
			if err != nil || !bytes.Equal(got, b) {
				t.Fatalf("GetBytes after the re-Put: %d bytes, %v; want the %d Put", len(got), err, len(b))
			}
			if got := mustGet(ctx, t, open(ctx, t, h), ref); !bytes.Equal(got, b) {
				t.Fatalf("another store: Get after the re-Put returned %d bytes that differ from the %d Put", len(got), len(b))
			}
		})
	}
}

// testIncompleteObjectRepairedByPut: an object whose name survived without
// all of its content (a failed upload's metadata, a file cut short) reads
// as ErrCorrupt or ErrNotFound without waiting for a timeout, does not
// count as present, and Putting the true bytes again repairs it.
func testIncompleteObjectRepairedByPut(ctx context.Context, t *testing.T, h Harness) {
	im, ok := h.(IncompleteMaker)
	if !ok {
		t.Skip("the Harness does not implement IncompleteMaker")
	}
	s := open(ctx, t, h)
	for _, size := range []int64{1000, 300_000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			b := genBytes(uint64(300+size), size)
			ref := mustPut(ctx, t, s, b)
			im.MakeIncomplete(ctx, t, ref)

			dctx, cancel := context.WithTimeout(ctx, damagedReadTimeout)
			defer cancel()
			err := readErr(dctx, s, ref)
			if !errors.Is(err, artifact.ErrCorrupt) && !errors.Is(err, artifact.ErrNotFound) {
				t.Fatalf("reading incomplete %s: %v; want an error wrapping ErrCorrupt or ErrNotFound, reported without waiting for a timeout", ref, err)
			}
			got, err := artifact.GetBytes(dctx, s, ref, size)
			if !errors.Is(err, artifact.ErrCorrupt) && !errors.Is(err, artifact.ErrNotFound) {
				t.Fatalf("GetBytes incomplete %s: %d bytes, %v; want an error wrapping ErrCorrupt or ErrNotFound", ref, len(got), err)
			}

			if again := mustPut(ctx, t, s, b); again != ref {
				t.Fatalf("re-Put: ref %s, want %s", again, ref)
			}
			rctx, cancel := context.WithTimeout(ctx, damagedReadTimeout)
			defer cancel()
			if got := mustGet(rctx, t, s, ref); !bytes.Equal(got, b) {
				t.Fatalf("Get after the re-Put returned %d bytes that differ from the %d Put", len(got), len(b))
			}
			if got := mustGet(rctx, t, open(ctx, t, h), ref); !bytes.Equal(got, b) {
				t.Fatalf("another store: Get after the re-Put returned %d bytes that differ from the %d Put", len(got), len(b))
			}
		})
	}
}

// truncatedReader yields data, and its error with the last of it in the
// same Read, as a reader of a stream cut short may.
type truncatedReader struct {
	data []byte
	err  error
}

func (r *truncatedReader) Read(p []byte) (int, error) {
	n := copy(p, r.data)
	r.data = r.data[n:]
	if len(r.data) == 0 {
		return n, r.err
	}
	return n, nil
}

// cutGzip returns content compressed with gzip and cut in the middle of the
// compressed stream.
func cutGzip(t *testing.T, content []byte) []byte {
	t.Helper()
	var z bytes.Buffer
	w := gzip.NewWriter(&z)
	if _, err := w.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return z.Bytes()[:z.Len()/2]
}

// testTruncatedReader: io.ErrUnexpectedEOF is what a gzip reader or an
// HTTP body returns when the stream was cut short. It is a failure like any
// other reader error, never the end of the content: the Put fails and
// stores neither the part read nor anything else.
func testTruncatedReader(ctx context.Context, t *testing.T, h Harness) {
	s := open(ctx, t, h)
	// The first 512 KiB of a longer content, then io.ErrUnexpectedEOF with
	// no data: the cut falls on a chunk boundary of most stores.
	fullChunks := func() io.Reader {
		return io.MultiReader(io.LimitReader(newGen(41, 1<<20), 512<<10), &truncatedReader{err: io.ErrUnexpectedEOF})
	}
	gz := cutGzip(t, genBytes(42, 1<<20))
	gunzip := func() io.Reader {
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			t.Fatal(err)
		}
		return zr
	}
	cases := []struct {
		name      string
		reader    func() io.Reader
		wholeSize int64
		seed      uint64
	}{
		{"DataWithErrUnexpectedEOF", func() io.Reader {
			return &truncatedReader{data: genBytes(40, 1000), err: io.ErrUnexpectedEOF}
		}, 0, 0},
		{"ErrUnexpectedEOFAfterFullChunks", fullChunks, 1 << 20, 41},
		{"CutGzipStream", gunzip, 1 << 20, 42},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// What a consumer of the reader gets before the error.
			part, err := io.ReadAll(tc.reader())
			if !errors.Is(err, io.ErrUnexpectedEOF) || len(part) == 0 {
				t.Fatalf("test reader: %d bytes, %v; want some bytes, then io.ErrUnexpectedEOF", len(part), err)
			}
			ref, err := s.Put(ctx, tc.reader())
			if err == nil {
				t.Fatalf("Put of a reader that ended with io.ErrUnexpectedEOF after %d bytes succeeded with ref %s", len(part), ref)
			}
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("Put's error %q does not wrap the reader's io.ErrUnexpectedEOF", err)
			}
			wantAbsent(ctx, t, s, controlevent.Checksum(part), "the part of a truncated stream that was read")
			if tc.wholeSize > 0 {
				wantAbsent(ctx, t, s, genRef(tc.seed, tc.wholeSize), "the whole content of a truncated stream")
			}
		})
	}
}

// testQuotaLimited: a Put that does not fit fails and stores nothing. A
// retry while the storage is still full fails too, instead of finding the
// first attempt's leftovers and reporting success, and objects that fit are
// unaffected. Once there is room, the retry stores the complete object.
func testQuotaLimited(ctx context.Context, t *testing.T, h Harness) {
	qs, ok := h.(QuotaSetter)
	if !ok {
		t.Skip("the Harness does not implement QuotaSetter")
	}
	s := open(ctx, t, h)
	const quota, big = 1 << 20, 4 << 20
	before := mustPut(ctx, t, s, genBytes(50, 64<<10))
	qs.SetQuota(ctx, t, quota)
	t.Cleanup(func() { qs.SetQuota(context.WithoutCancel(ctx), t, -1) })
	small := genBytes(51, quota/16)
	smallRef := mustPut(ctx, t, s, small)

	want := genRef(52, big)
	for attempt := 1; attempt <= 2; attempt++ {
		ref, err := s.Put(ctx, newGen(52, big))
		if err == nil {
			t.Fatalf("Put #%d of %d bytes into storage limited to %d succeeded with ref %s", attempt, big, quota, ref)
		}
		t.Logf("Put #%d of %d bytes with a %d-byte quota: %v", attempt, big, quota, err)
		dctx, cancel := context.WithTimeout(ctx, damagedReadTimeout)
		wantAbsent(dctx, t, s, want, fmt.Sprintf("Put #%d failed for want of space", attempt))
		cancel()
	}
	if got := mustGet(ctx, t, s, smallRef); !bytes.Equal(got, small) {
		t.Fatalf("Get of a small object Put under the quota returned %d bytes that differ from the %d Put", len(got), len(small))
	}
	wantStreamed(ctx, t, s, before, 64<<10, "object Put before the quota")

	qs.SetQuota(ctx, t, -1)
	ref, err := s.Put(ctx, newGen(52, big))
	if err != nil {
		t.Fatalf("Put of %d bytes after the quota was lifted: %v", big, err)
	}
	if ref != want {
		t.Fatalf("Put after the quota was lifted: ref %s, want %s", ref, want)
	}
	wantStreamed(ctx, t, s, ref, big, "after the quota was lifted")
	wantStreamed(ctx, t, open(ctx, t, h), ref, big, "another store, after the quota was lifted")
}
