package snapshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/feed"
)

// ErrNoSnapshot is wrapped by Catalog.Latest when nothing was published yet.
// A joining node then replays the feed from the start.
var ErrNoSnapshot = errors.New("no snapshot published")

// ErrOlder is wrapped by Catalog.Publish when the record's cursor is below
// the latest published one's: the fleet's latest snapshot never moves
// backwards (a node bootstrapping from it would then start behind what an
// earlier joiner got). Take a new snapshot of an up-to-date node instead.
var ErrOlder = errors.New("snapshot is older than the latest published one")

// ErrNoCatalog is wrapped by OpenCatalog's error, and by a catalog's calls,
// when the broker object holding the catalog does not exist yet: the
// producer creates it (CatalogConfig.Create), never a node.
var ErrNoCatalog = errors.New("snapshot catalog does not exist yet")

// Record is what a Catalog holds for one published snapshot: the manifest's
// reference and the facts a joining node chooses by, so that picking one
// needs no artifact fetch. The manifest itself stays the authority: Restore
// loads and verifies it.
//
// How a snapshot relates to the feed: a snapshot is a recorded position,
// not a feed event. ControlVersion is the manifest's cursor: the snapshot
// holds the effect of every feed event up to it and of none after, so a
// node restored from it polls the feed after ControlVersion. Publishing
// appends nothing to the feed, so the feed's positions, its gap rules and
// its dedup window are untouched.
type Record struct {
	// Manifest is the manifest's artifact reference ("sha256:<hex>").
	Manifest string `json:"manifest"`
	// ControlVersion is the manifest's cursor.
	ControlVersion uint64 `json:"control_version"`
	// AppliedEvents is the manifest's applied-event count.
	AppliedEvents int64 `json:"applied_events"`
	// Size is the database artifact's length in bytes.
	Size int64 `json:"size"`
	// Node is the node the snapshot was taken from, if recorded.
	Node string `json:"node,omitempty"`
	// CreatedAt is when the copy was taken; PublishedAt when it was
	// published (both UTC).
	CreatedAt   time.Time `json:"created_at"`
	PublishedAt time.Time `json:"published_at"`
}

// RecordOf returns the record publishing m at publishedAt.
func RecordOf(m Manifest, publishedAt time.Time) Record {
	return Record{Manifest: m.Ref, ControlVersion: m.ControlVersion, AppliedEvents: m.AppliedEvents,
		Size: m.Database.Size, Node: m.Node, CreatedAt: m.CreatedAt.UTC(), PublishedAt: publishedAt.UTC()}
}

// Validate reports whether r can be published: a well-formed manifest
// reference and a positive size.
func (r Record) Validate() error {
	if err := artifact.ParseRef(r.Manifest); err != nil {
		return fmt.Errorf("snapshot: record: manifest ref: %w", err)
	}
	if r.Size <= 0 || r.AppliedEvents < 0 {
		return fmt.Errorf("snapshot: record %s: size %d, applied events %d: want a positive size", r.Manifest, r.Size, r.AppliedEvents)
	}
	return nil
}

// Covers reports whether a node restored from r can catch up by replay on
// a feed whose oldest retained event is firstAvailable: the first event
// after r's cursor must still be held. A snapshot older than that is
// useless to a node behind the retention.
func (r Record) Covers(firstAvailable uint64) bool {
	return r.ControlVersion+1 >= firstAvailable
}

// Catalog records which snapshots were published for one feed, so that a
// joining node finds the fleet's latest in O(1). There is one catalog per
// feed backend (see RegisterCatalog); it lives beside the feed (a JetStream
// key/value bucket, a directory inside the file feed's directory) and holds
// only Records: the snapshots themselves are artifacts in the artifact
// store.
//
// Implementations are safe for concurrent use, by several processes too.
type Catalog interface {
	// Publish records r as the feed's latest snapshot and adds it to the
	// history List returns. A record whose ControlVersion is below the
	// latest's is refused (ErrOlder) and changes nothing; publishing the
	// latest's manifest again is a no-op. Publish is atomic: a crash leaves
	// either the old latest or r. Two concurrent Publish calls both end
	// recorded and the latest is the one with the higher ControlVersion
	// (of equal ones, either).
	Publish(ctx context.Context, r Record) error
	// Latest returns the latest published record in one read, or an error
	// wrapping ErrNoSnapshot.
	Latest(ctx context.Context) (Record, error)
	// List returns the recorded history, newest (highest ControlVersion)
	// first, at most the backend's history length; empty, not an error,
	// when nothing was published.
	List(ctx context.Context) ([]Record, error)
	// Name is the backend's name (the feed backend's).
	Name() string
}

// CatalogConfig configures a catalog backend.
type CatalogConfig struct {
	// Feed locates the feed the catalog belongs to (its directory, its
	// NATS servers and stream).
	Feed feed.SourceConfig
	// Create lets the backend create its broker object (the JetStream
	// bucket) when missing and check an existing one; only the producer
	// sets it. Without it a missing object is ErrNoCatalog.
	Create bool
	// Logger receives the backend's notices; nil discards them.
	Logger *slog.Logger
}

// CatalogConstructor opens a catalog backend. The returned Catalog may also
// implement io.Closer; callers close it when done.
type CatalogConstructor func(ctx context.Context, cfg CatalogConfig) (Catalog, error)

var (
	catalogsMu sync.RWMutex
	catalogs   = map[string]CatalogConstructor{}
)

// RegisterCatalog makes a catalog backend available under the name of the
// feed backend it belongs to ("file", "jetstream"). It panics on a nil
// constructor, an empty name or a duplicate, like feed.Register.
func RegisterCatalog(name string, c CatalogConstructor) {
	catalogsMu.Lock()
	defer catalogsMu.Unlock()
	switch {
	case c == nil:
		panic("snapshot: RegisterCatalog: nil constructor for " + name)
	case name == "":
		panic("snapshot: RegisterCatalog: empty name")
	case catalogs[name] != nil:
		panic("snapshot: RegisterCatalog called twice for " + name)
	}
	catalogs[name] = c
}

// Catalogs returns the sorted names of the registered catalog backends.
func Catalogs() []string {
	catalogsMu.RLock()
	defer catalogsMu.RUnlock()
	names := make([]string, 0, len(catalogs))
	for n := range catalogs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// OpenCatalog opens the catalog of the feed backend name. An unknown name
// is an error listing the registered ones (a feed without a catalog, such
// as nop, cannot publish snapshots).
func OpenCatalog(ctx context.Context, name string, cfg CatalogConfig) (Catalog, error) {
	catalogsMu.RLock()
	c := catalogs[name]
	catalogsMu.RUnlock()
	if c == nil {
		return nil, fmt.Errorf("snapshot: no snapshot catalog for feed %q (forgotten import?); feeds with one: %v", name, Catalogs())
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return c(ctx, cfg)
}

// SortRecords sorts records newest first: by ControlVersion, then
// PublishedAt, descending. Backends use it for List.
func SortRecords(rs []Record) {
	slices.SortStableFunc(rs, func(a, b Record) int {
		if a.ControlVersion != b.ControlVersion {
			if a.ControlVersion > b.ControlVersion {
				return -1
			}
			return 1
		}
		return b.PublishedAt.Compare(a.PublishedAt)
	})
}

// CheckNewer is the Publish rule backends share: nil if r may replace
// latest (r is at least as new), else an error wrapping ErrOlder.
func CheckNewer(latest, r Record) error {
	if r.ControlVersion < latest.ControlVersion {
		return fmt.Errorf("snapshot: publish %s (cursor %d): the latest published snapshot %s is at cursor %d: %w; take a new snapshot of an up-to-date node",
			r.Manifest, r.ControlVersion, latest.Manifest, latest.ControlVersion, ErrOlder)
	}
	return nil
}
