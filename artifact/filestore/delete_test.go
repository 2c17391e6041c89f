package filestore_test

import (
	"errors"
	"testing"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/filestore"
)

// Delete removes an object, is idempotent and refuses a malformed ref.
func TestDelete(t *testing.T) {
	ctx := t.Context()
	s, err := filestore.New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := artifact.PutBytes(ctx, s, []byte("old snapshot"))
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
	if err := s.Delete(ctx, "../../etc/passwd"); !errors.Is(err, artifact.ErrBadRef) {
		t.Fatalf("Delete of a malformed ref = %v, want ErrBadRef", err)
	}
}
