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
// the bytes against the reference; a Put of bytes whose stored copy was
// damaged replaces it) and passes RunConformanceTests, so tests of code that
// uses a Store can rely on it as on a real backend. It is safe for
// concurrent use; set the hooks before sharing it.
type MemStore struct {
	// PutFunc and GetFunc, if set, replace Put and Get, for injecting
	// faults.
	PutFunc func(ctx context.Context, r io.Reader) (string, error)
	GetFunc func(ctx context.Context, ref string) (io.ReadCloser, error)

	*memData
}

// memData is what a MemStore and the stores Reopen returns share.
type memData struct {
	mu      sync.Mutex
	objects map[string][]byte
	quota   int64 // most bytes all objects may hold; < 0: no limit
}

var _ artifact.Store = (*MemStore)(nil)

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore {
	return &MemStore{memData: &memData{objects: map[string][]byte{}, quota: -1}}
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
	if old, ok := m.objects[ref]; ok && bytes.Equal(old, buf.Bytes()) {
		return ref, nil // present and intact
	}
	if m.quota >= 0 {
		used := int64(buf.Len())
		for r, b := range m.objects {
			if r != ref {
				used += int64(len(b))
			}
		}
		if used > m.quota {
			return "", fmt.Errorf("mem: put %s: %d bytes would exceed the %d-byte quota", ref, used, m.quota)
		}
	}
	m.objects[ref] = buf.Bytes() // new, or replacing a damaged copy
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

// SetQuota limits the bytes all objects together may hold: a Put that would
// exceed max fails and stores nothing. A negative max lifts the limit.
func (m *MemStore) SetQuota(max int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.quota = max
}

// Reopen returns another MemStore on the same objects, without the hooks,
// as a backend reopened on the same storage.
func (m *MemStore) Reopen() *MemStore { return &MemStore{memData: m.memData} }

// Harness returns a conformance Harness over m's objects: Open reopens m,
// Corrupt flips the first byte of an object, Remove deletes it,
// MakeIncomplete keeps its first half, SetQuota calls m.SetQuota.
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

func (h memHarness) MakeIncomplete(_ context.Context, t *testing.T, ref string) {
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	b, ok := h.m.objects[ref]
	if !ok {
		t.Fatalf("MakeIncomplete %s: no such object", ref)
	}
	h.m.objects[ref] = slices.Clone(b[:len(b)/2])
}

func (h memHarness) SetQuota(_ context.Context, _ *testing.T, max int64) { h.m.SetQuota(max) }
