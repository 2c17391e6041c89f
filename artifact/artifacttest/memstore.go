package artifacttest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/controlevent"
)

// MemStore is an in-memory artifact.Store for tests, with fault hooks. It
// keeps the Store contract (Put streams its reader in chunks and checks ctx
// between them, stores nothing on failure, and is idempotent; Get verifies
// the bytes against the reference) and passes RunConformanceTests, so tests
// of code that uses a Store can rely on it as on a real backend. It is safe
// for concurrent use; set the hooks before sharing it.
type MemStore struct {
	// PutFunc and GetFunc, if set, replace Put and Get, for injecting
	// faults.
	PutFunc func(ctx context.Context, r io.Reader) (string, error)
	GetFunc func(ctx context.Context, ref string) (io.ReadCloser, error)

	mu      *sync.Mutex
	objects map[string][]byte
}

var _ artifact.Store = (*MemStore)(nil)

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore {
	return &MemStore{mu: new(sync.Mutex), objects: map[string][]byte{}}
}

// Name returns "mem".
func (m *MemStore) Name() string { return "mem" }

// Put stores everything r yields and returns its reference, or calls
// PutFunc when set.
func (m *MemStore) Put(ctx context.Context, r io.Reader) (string, error) {
	if m.PutFunc != nil {
		return m.PutFunc(ctx, r)
	}
	h := controlevent.NewHash()
	var buf bytes.Buffer
	chunk := make([]byte, 32<<10)
	for {
		if err := ctx.Err(); err != nil {
			return "", fmt.Errorf("mem: put: %w", err)
		}
		n, err := r.Read(chunk)
		buf.Write(chunk[:n])
		h.Write(chunk[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("mem: put: %w", err)
		}
	}
	ref := controlevent.ChecksumOf(h)
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.objects[ref]; !ok {
		m.objects[ref] = buf.Bytes()
	}
	return ref, nil
}

// Get returns a reader of object ref that reports artifact.ErrCorrupt at
// the end if the stored bytes do not hash to ref, or calls GetFunc when set.
func (m *MemStore) Get(ctx context.Context, ref string) (io.ReadCloser, error) {
	if m.GetFunc != nil {
		return m.GetFunc(ctx, ref)
	}
	if err := artifact.ParseRef(ref); err != nil {
		return nil, err
	}
	m.mu.Lock()
	b, ok := m.objects[ref]
	m.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("mem: get %s: %w", ref, artifact.ErrNotFound)
	}
	return io.NopCloser(artifact.VerifyReader(bytes.NewReader(b), ref)), nil
}

// Replace stores b under ref as it is, bypassing Put: with other bytes than
// ref's, the object is corrupt and Get reports it.
func (m *MemStore) Replace(ref string, b []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.objects[ref] = slices.Clone(b)
}

// Remove deletes object ref, bypassing the Store.
func (m *MemStore) Remove(ref string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.objects, ref)
}

// Reopen returns another MemStore on the same objects, without the hooks,
// as a backend reopened on the same storage.
func (m *MemStore) Reopen() *MemStore { return &MemStore{mu: m.mu, objects: m.objects} }

// Harness returns a conformance Harness over m's objects: Open reopens m,
// Corrupt flips the first byte of an object, Remove deletes it.
func (m *MemStore) Harness() Harness { return memHarness{m} }

type memHarness struct{ m *MemStore }

func (h memHarness) Open(context.Context, *testing.T) artifact.Store { return h.m.Reopen() }

func (h memHarness) Corrupt(_ context.Context, t *testing.T, ref string) {
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	b := slices.Clone(h.m.objects[ref])
	if len(b) == 0 {
		t.Fatalf("Corrupt %s: no such non-empty object", ref)
	}
	b[0] ^= 0xff
	h.m.objects[ref] = b
}

func (h memHarness) Remove(_ context.Context, _ *testing.T, ref string) { h.m.Remove(ref) }
