package natsobject_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/natsobject"
	"github.com/controlfeed/controlfeed/internal/natsembed"
)

// Delete removes an object (Get then reports ErrNotFound), is idempotent,
// refuses a malformed ref, and a later Put stores the bytes again.
func TestDelete(t *testing.T) {
	ctx := t.Context()
	h := newHarness(ctx, t, natsembed.StartForTest(t))
	s := h.Open(ctx, t).(*natsobject.Store)
	defer s.Close()
	b := bytes.Repeat([]byte("old snapshot "), 30_000)
	ref, err := artifact.PutBytes(ctx, s, b)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.Delete(ctx, ref); err != nil {
			t.Fatalf("Delete: %v", err)
		}
	}
	if _, err := s.Get(ctx, ref); !errors.Is(err, artifact.ErrNotFound) {
		t.Fatalf("Get after Delete = %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx, "sha256:nope"); !errors.Is(err, artifact.ErrBadRef) {
		t.Fatalf("Delete of a malformed ref = %v, want ErrBadRef", err)
	}
	if _, err := artifact.PutBytes(ctx, s, b); err != nil {
		t.Fatal(err)
	}
	if got, err := artifact.GetBytes(ctx, s, ref, 1<<20); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("GetBytes after a re-Put: %d bytes, %v", len(got), err)
	}
}
