package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/controlfeed/controlfeed/feed"
)

var (
	// ErrNoStore is wrapped by a Store's errors while the broker object
	// holding the reports (the JetStream bucket) does not exist: the
	// producer creates it (Config.Create), never a node.
	ErrNoStore = errors.New("fleet report store does not exist yet")
	// ErrNotFound is wrapped by Get and Delete for a node without a
	// report.
	ErrNotFound = errors.New("no report for this node")
)

// Entry is a stored report and when the store received it (the broker's
// or the file system's clock, not the node's).
type Entry struct {
	Report Report
	SeenAt time.Time
}

// Store holds one report per node. Implementations are safe for
// concurrent use, by several processes too.
type Store interface {
	// Put replaces the node's report with r (after r.Validate). It is
	// atomic: a reader sees the old report or r, never a mix.
	Put(ctx context.Context, r Report) error
	// List returns every node's latest report, sorted by node name. A
	// stored value that does not decode is skipped and reported in the
	// returned error together with the others (errors.Join), so one bad
	// report does not hide the fleet: callers may use the entries even
	// when err != nil, as long as the error is shown.
	List(ctx context.Context) ([]Entry, error)
	// Get returns one node's report, or an error wrapping ErrNotFound.
	Get(ctx context.Context, node string) (Entry, error)
	// Delete removes the node's report; ErrNotFound if it has none.
	Delete(ctx context.Context, node string) error
	// Name is the backend's name (the feed backend's).
	Name() string
}

// Forgetter is an optional interface a Store may implement: Forget removes
// what the backend keeps for a node besides its report (on JetStream, the
// node's durable consumer), for a decommissioned node. If a Store does not
// implement it, there is nothing besides the report. It returns nil when
// there was nothing to remove.
type Forgetter interface {
	Forget(ctx context.Context, node string) error
}

// Config configures a Store backend.
type Config struct {
	// Feed locates the feed the store belongs to (its directory, its NATS
	// servers and stream).
	Feed feed.SourceConfig
	// Create lets the backend create its broker object (the JetStream
	// bucket) when missing and check an existing one; only the producer
	// sets it. Without it a missing object is ErrNoStore.
	Create bool
	// Logger receives the backend's notices; nil discards them.
	Logger *slog.Logger
}

// Constructor opens a Store backend. The returned Store may also implement
// io.Closer; callers close it when done.
type Constructor func(ctx context.Context, cfg Config) (Store, error)

var (
	storesMu sync.RWMutex
	stores   = map[string]Constructor{}
)

// Register makes a Store backend available under the name of the feed
// backend it belongs to ("file", "jetstream"). It panics on a nil
// constructor, an empty name or a duplicate.
func Register(name string, c Constructor) {
	storesMu.Lock()
	defer storesMu.Unlock()
	switch {
	case c == nil:
		panic("fleet: Register: nil constructor for " + name)
	case name == "":
		panic("fleet: Register: empty name")
	case stores[name] != nil:
		panic("fleet: Register called twice for " + name)
	}
	stores[name] = c
}

// Stores returns the sorted names of the registered backends.
func Stores() []string {
	storesMu.RLock()
	defer storesMu.RUnlock()
	names := make([]string, 0, len(stores))
	for n := range stores {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Open opens the report store of the feed backend name. An unknown name is
// an error listing the registered ones (a feed without a store, such as
// nop, has no fleet to report to).
func Open(ctx context.Context, name string, cfg Config) (Store, error) {
	storesMu.RLock()
	c := stores[name]
	storesMu.RUnlock()
	if c == nil {
		return nil, fmt.Errorf("fleet: no report store for feed %q (forgotten import?); feeds with one: %v", name, Stores())
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return c(ctx, cfg)
}
