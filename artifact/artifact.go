// Package artifact is the content-addressed payload store seam. Control
// events carry a reference to their payload, never the payload itself; the
// payload lives here.
//
// A reference is derived from the bytes: "sha256:<64 lowercase hex>", the
// same string as the event's checksum. Put is therefore idempotent (storing
// the same bytes twice yields the same reference and one object), and a
// reader can verify what it got. Get verifies while streaming and reports a
// mismatch as ErrCorrupt, so a corrupted or substituted object is never
// returned as good data.
//
// Backends register by name like feed backends: "file" (package
// artifact/filestore, a local directory) and "jetstream" (package
// artifact/natsobject, a NATS Object Store bucket). Activate one with a blank
// import and open it with Open.
//
// # Crash safety and retries
//
// Backends write atomically: an object is either absent or complete under its
// reference, never partial. Producers store the artifact before committing the
// transaction that appends the event naming it, so a published event never
// names a missing artifact.
//
// Put returns a reference only when the object under it is complete and its
// bytes hash to the reference: readable before referenced. Storage can hold
// less than that after a crash, a full disk or bucket, or damage: a name
// whose content is missing or cut short, or other bytes under the name. So
// an object already present counts only once the backend has verified it
// (its size and content or digest, and for a chunked store that its chunks
// are there), and one that fails is replaced atomically by the new copy. A
// failed Put, for whatever reason, returns no reference and can be retried
// with the same content at any time; the first success means the object is
// complete, and Putting the true bytes again is how an operator repairs a
// damaged object. Only io.EOF ends the content: any other error of the
// reader, io.ErrUnexpectedEOF from a cut gzip stream or HTTP body included,
// fails the Put.
//
// # Errors
//
// Get returns an error wrapping ErrNotFound when no object has the reference,
// and the stream it returns fails with an error wrapping ErrCorrupt when the
// bytes do not hash to the reference. A malformed reference is an error
// wrapping ErrBadRef.
package artifact

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
)

var (
	// ErrNotFound is wrapped when no object has the requested reference.
	ErrNotFound = errors.New("artifact not found")
	// ErrCorrupt is wrapped when an object's bytes do not hash to its
	// reference.
	ErrCorrupt = errors.New("artifact corrupt")
	// ErrBadRef is wrapped when a reference is not "sha256:<64 lowercase hex>".
	ErrBadRef = errors.New("malformed artifact reference")
	// ErrTooLarge is wrapped by GetBytes when an object exceeds the limit.
	ErrTooLarge = errors.New("artifact too large")
)

// Store is a content-addressed object store. Implementations are safe for
// concurrent use by multiple goroutines.
type Store interface {
	// Put stores everything r yields and returns its reference. It streams:
	// the content is never held in memory whole. It returns a reference
	// only when the object stored under it is complete and hashes to it.
	// Put is idempotent: storing bytes already present returns the same
	// reference and leaves one object, but an object present under the
	// reference counts only once verified (size and content or digest);
	// an incomplete or wrong one is replaced atomically, so a Put repairs
	// it. Only io.EOF ends the content: any other error of r, including
	// io.ErrUnexpectedEOF, fails the Put. If ctx is canceled, r fails or
	// the storage does (full, unreachable), Put returns an error, no
	// reference, and stores nothing under any reference; retrying with the
	// same content is always safe. Concurrent Puts of the same content are
	// safe.
	Put(ctx context.Context, r io.Reader) (ref string, err error)

	// Get returns a stream of the object's bytes. It returns an error
	// wrapping ErrNotFound if the object is absent, ErrBadRef if ref is
	// malformed. The stream verifies the content as it is read: the Read
	// that reaches the end returns an error wrapping ErrCorrupt instead of
	// io.EOF if the bytes do not hash to ref. Damage the backend can see
	// before reading (a name whose content is missing, a FIFO where a file
	// should be) is an ErrCorrupt (or ErrNotFound) from Get or the first
	// Read, promptly, never a wait for a timeout. The caller must Close it.
	Get(ctx context.Context, ref string) (io.ReadCloser, error)

	// Name is the backend identity, for logs.
	Name() string
}

// Closer is an optional interface a Store implements when it holds resources
// (connections, file handles) that Close releases.
type Closer interface {
	Close() error
}

// Config carries backend options. The file backend uses Dir; the jetstream
// backend uses NATS. Backends ignore fields that are not theirs.
type Config struct {
	// Dir is the directory of the file backend.
	Dir string
	// NATS configures the jetstream backend.
	NATS NATSConfig
	// Logger receives the backend's diagnostics (a damaged object
	// replaced, an upload that did not read back whole, a file swept).
	// Nil discards them.
	Logger *slog.Logger
}

// NATSConfig holds the options of the jetstream artifact backend. Zero values
// select the defaults documented in package artifact/natsobject.
type NATSConfig struct {
	URLs                               []string
	Bucket                             string
	Replicas                           int
	CredsFile                          string
	User, Password                     string
	TLSCAFile, TLSCertFile, TLSKeyFile string
	// Create is set by the producer, the writer of artifacts: the store
	// creates the bucket with Replicas when it is missing and refuses an
	// existing one whose replicas or storage differ. Without it (a fleet
	// node) the store never creates the bucket: it opens it when first
	// needed and reports it unavailable until the producer has created it.
	Create bool
	// RequestTimeout bounds each request to the broker that the caller's
	// context leaves unbounded, and is the base of an upload's or a
	// download's deadline, which grows with the object's size (see the
	// backend). Zero selects the backend's default; programmatic options
	// given to the backend take precedence.
	RequestTimeout time.Duration
}

// Constructor builds a Store from configuration.
type Constructor func(Config) (Store, error)

var (
	mu       sync.RWMutex
	registry = map[string]Constructor{}
)

// Register makes a Store backend available under name; call it from the
// backend's init(). It panics on an empty name, a nil constructor or a
// duplicate name.
func Register(name string, c Constructor) {
	mu.Lock()
	defer mu.Unlock()
	switch {
	case name == "":
		panic("artifact: Register called with an empty name")
	case c == nil:
		panic(fmt.Sprintf("artifact: store %q registered with a nil constructor", name))
	case registry[name] != nil:
		panic(fmt.Sprintf("artifact: store %q registered twice", name))
	}
	registry[name] = c
}

// Open constructs the Store registered under name. An unknown name is an
// error naming it and listing the registered names.
func Open(name string, cfg Config) (Store, error) {
	mu.RLock()
	c, ok := registry[name]
	mu.RUnlock()
	if !ok {
		list := strings.Join(Stores(), ", ")
		if list == "" {
			list = "none"
		}
		return nil, fmt.Errorf("artifact: unknown store %q (forgotten import?); available: %s", name, list)
	}
	s, err := c(cfg)
	if err != nil {
		return nil, fmt.Errorf("artifact: open store %q: %w", name, err)
	}
	return s, nil
}

// Stores returns the sorted names of the registered Store backends.
func Stores() []string {
	mu.RLock()
	defer mu.RUnlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// ParseRef checks that ref is "sha256:<64 lowercase hex>". The error wraps
// ErrBadRef.
func ParseRef(ref string) error {
	if err := controlevent.ParseChecksum(ref); err != nil {
		return fmt.Errorf("artifact: reference %q: %w", short(ref), ErrBadRef)
	}
	return nil
}

// RefOf returns the reference of b without storing it.
func RefOf(b []byte) string { return controlevent.Checksum(b) }

// PutBytes stores b and returns its reference.
func PutBytes(ctx context.Context, s Store, b []byte) (string, error) {
	return s.Put(ctx, bytes.NewReader(b))
}

// BytesGetter is an optional interface of a Store that reads a whole object
// into memory more cheaply than through Get (fewer system calls, one
// allocation). GetBytes uses it when the Store implements it. Its contract
// is GetBytes's: the bytes returned are verified against ref (ErrCorrupt
// otherwise), a missing object wraps ErrNotFound, an object larger than
// limit wraps ErrTooLarge, a malformed ref wraps ErrBadRef. It must be safe
// for concurrent use, like the rest of Store.
type BytesGetter interface {
	GetBytes(ctx context.Context, ref string, limit int64) ([]byte, error)
}

// GetBytes reads and verifies the whole object ref, refusing objects larger
// than limit bytes (ErrTooLarge). Use Get to stream larger objects. It uses
// the Store's BytesGetter when it has one.
func GetBytes(ctx context.Context, s Store, ref string, limit int64) ([]byte, error) {
	if bg, ok := s.(BytesGetter); ok {
		return bg.GetBytes(ctx, ref, limit)
	}
	rc, err := s.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	n := limit
	if n < math.MaxInt64 {
		n++ // read one byte past the limit to detect a larger object
	}
	b, err := io.ReadAll(io.LimitReader(rc, n))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("artifact: %s: larger than the %d-byte limit: %w", ref, limit, ErrTooLarge)
	}
	return b, nil
}

// VerifyReader wraps r, the content of object ref, so that the Read that
// reaches the end returns an error wrapping ErrCorrupt instead of io.EOF when
// the bytes do not hash to ref. Backends use it to implement Get.
func VerifyReader(r io.Reader, ref string) io.Reader {
	return &verifier{r: r, ref: ref, h: controlevent.NewHash()}
}

type verifier struct {
	r   io.Reader
	ref string
	h   hash.Hash
	n   int64
	err error
}

func (v *verifier) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if err == io.EOF {
		if got := controlevent.ChecksumOf(v.h); got != v.ref {
			err = fmt.Errorf("artifact: %s: %d bytes read hash to %s: %w", v.ref, v.n, got, ErrCorrupt)
		}
	}
	if err != nil {
		v.err = err
	}
	return n, err
}

func short(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
