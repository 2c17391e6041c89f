// Package artifacttest is the conformance suite every artifact.Store backend
// runs against itself. A backend's test supplies a Harness that opens stores
// on one piece of storage (a directory, a bucket) and can tamper with that
// storage behind the store's back; RunConformanceTests then checks each
// sentence of the artifact.Store contract in a named subtest with a fresh
// harness.
//
//	func TestConformance(t *testing.T) {
//		artifacttest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) artifacttest.Harness {
//			return &harness{dir: t.TempDir()}
//		})
//	}
//
// # What is checked
//
// Round trips of assorted contents; references equal to
// controlevent.Checksum of the bytes; idempotent and concurrent Puts; the
// empty object; ErrNotFound, ErrBadRef and ErrCorrupt; a 64 MiB object
// streamed in and out (8 MiB with -short) without the suite holding it in
// memory; Puts ended by a canceled context or a failing reader store
// nothing; objects survive reopening the store; GetBytes enforces its limit.
//
// Put returns a reference only for a complete, verified object: a failed
// Put retried with the whole content stores it; a corrupt object, and (with
// IncompleteMaker) an object whose name survived without all of its
// content, is repaired by Putting the true bytes again, and reading the
// damaged one fails promptly with ErrCorrupt or ErrNotFound rather than
// waiting for a timeout; a reader that ends with io.ErrUnexpectedEOF (a cut
// gzip stream, a cut HTTP body) fails the Put; and (with QuotaSetter) a Put
// that does not fit fails, stores nothing, keeps failing on retry while the
// storage is full and succeeds once there is room.
//
// # Errors
//
// The suite reports failures through t; it never panics on a misbehaving
// store, and it closes every store it opens that implements artifact.Closer.
package artifacttest

import (
	"context"
	"testing"

	"github.com/controlfeed/controlfeed/artifact"
)

// Harness gives the suite access to one backend's storage. A Harness is
// used by one subtest only, sequentially except where a subtest says
// otherwise; storage it creates must be released through t.Cleanup.
type Harness interface {
	// Open opens a Store on the harness's storage. Every Store opened on
	// one harness sees the objects Put through the others, including those
	// Put before it was opened. The suite closes the Store at the end of
	// the test if it implements artifact.Closer.
	Open(ctx context.Context, t *testing.T) artifact.Store

	// Corrupt replaces the stored bytes of ref with different bytes of the
	// same length, bypassing the Store, so Get must detect it. ref names a
	// non-empty object that was Put on this harness.
	Corrupt(ctx context.Context, t *testing.T, ref string)

	// Remove deletes the stored object ref, bypassing the Store.
	Remove(ctx context.Context, t *testing.T, ref string)
}

// IncompleteMaker is an optional interface a Harness implements when its
// storage can hold an object's name without all of its content, the way a
// failed upload or a damaged disk leaves it. If the Harness does not
// implement it, IncompleteObjectRepairedByPut is skipped.
type IncompleteMaker interface {
	// MakeIncomplete removes part of the stored content of ref, bypassing
	// the Store, and leaves its name in place: the file store cuts the
	// file short, the Object Store keeps the metadata and purges the
	// chunks. ref names an object of at least 1000 bytes Put on this
	// harness.
	MakeIncomplete(ctx context.Context, t *testing.T, ref string)
}

// QuotaSetter is an optional interface a Harness implements when it can
// limit the size of its storage, as a bucket with a byte limit or a full
// disk does. If the Harness does not implement it, QuotaLimited is skipped;
// a Harness that implements it but cannot limit storage on this platform
// calls t.Skip with the reason.
type QuotaSetter interface {
	// SetQuota limits the storage so that a Put of an object of more than
	// max bytes fails for want of space, while objects of at most max/8
	// bytes still fit (the harness may count the limit per object or for
	// the whole storage). A negative max lifts the limit. The limit lasts
	// until the next SetQuota or the end of the test.
	SetQuota(ctx context.Context, t *testing.T, max int64)
}

// HarnessMaker returns a Harness on fresh, empty storage. It is called once
// per subtest, with that subtest's t; it reports setup failures with
// t.Fatal.
type HarnessMaker func(ctx context.Context, t *testing.T) Harness

type conformanceTest struct {
	name string
	run  func(ctx context.Context, t *testing.T, h Harness)
}

var conformanceTests = []conformanceTest{
	{"PutGetRoundTrip", testPutGetRoundTrip},
	{"RefIsSHA256", testRefIsSHA256},
	{"PutIdempotent", testPutIdempotent},
	{"EmptyObject", testEmptyObject},
	{"NotFound", testNotFound},
	{"BadRef", testBadRef},
	{"CorruptionDetected", testCorruptionDetected},
	{"ConcurrentPutsSameContent", testConcurrentPutsSameContent},
	{"ConcurrentPutsDistinctContent", testConcurrentPutsDistinctContent},
	{"LargeStreamed", testLargeStreamed},
	{"CanceledPutLeavesNothing", testCanceledPutLeavesNothing},
	{"PersistenceAcrossReopen", testPersistenceAcrossReopen},
	{"GetBytesLimit", testGetBytesLimit},
	{"FailedPutRetried", testFailedPutRetried},
	{"CorruptObjectRepairedByPut", testCorruptObjectRepairedByPut},
	{"IncompleteObjectRepairedByPut", testIncompleteObjectRepairedByPut},
	{"TruncatedReader", testTruncatedReader},
	{"QuotaLimited", testQuotaLimited},
}

// RunConformanceTests runs every conformance test as a subtest of t, each on
// a harness from newHarness. Subtests run sequentially; the suite does not
// call t.Parallel.
func RunConformanceTests(t *testing.T, newHarness HarnessMaker) {
	t.Helper()
	for _, tc := range conformanceTests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			h := newHarness(ctx, t)
			if h == nil {
				t.Fatal("HarnessMaker returned a nil Harness")
			}
			tc.run(ctx, t, h)
		})
	}
}

// open opens a store on h and registers its Close.
func open(ctx context.Context, t *testing.T, h Harness) artifact.Store {
	t.Helper()
	s := h.Open(ctx, t)
	if s == nil {
		t.Fatal("Harness.Open returned a nil Store")
	}
	if c, ok := s.(artifact.Closer); ok {
		t.Cleanup(func() {
			if err := c.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	return s
}
