package chaos

import (
	"context"
	"database/sql"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/filesource"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/snapshot"
	_ "github.com/controlfeed/controlfeed/snapshot/filecatalog" // the catalogs latestSnapshot opens
	_ "github.com/controlfeed/controlfeed/snapshot/natscatalog"
)

// The "node wiped" fault: a node's database is deleted while the node is
// stopped, and the node is restarted with its usual flags (serve's
// --bootstrap=auto), so that it must restore the feed's latest published
// snapshot and resume after its cursor. node1 publishes one periodically
// (--snapshot-interval, --snapshot-every, --snapshot-keep) for the whole
// run and is never wiped. The checker needs nothing special: a restored
// database holds the publisher's controlfeed_applied_events up to the
// snapshot's cursor (each event once, at its first stream position, skips
// included) and the node records the rest itself, so the exactly-once,
// order, cursor and identical-state checks apply to it unchanged.

// Snapshot cadence of node1, the publisher.
var wipePublisherArgs = []string{"--snapshot-interval", "2s", "--snapshot-every", "500", "--snapshot-keep", "2"}

// wipeState is the harness's state of the wipes: the node database handles
// are replaced after a wipe (the old ones read a deleted file).
type wipeState struct {
	mu    sync.RWMutex
	stale []*sql.DB // replaced handles, closed at teardown
	// inject is held while a bad input is injected and resolved, and for
	// a whole wipe: a node restored past a bad input it never halted at
	// would look like a fault not detected, and the resolution's skips
	// must not write to a database being replaced.
	inject sync.Mutex
}

// setupWipes makes node1 the snapshot publisher.
func (h *harness) setupWipes() {
	if h.cfg.Wipes > 0 && len(h.nodes) > 1 {
		h.nodes[0].argv = append(h.nodes[0].argv, wipePublisherArgs...)
	}
}

// nodeDB returns the harness's read handle of node i's database.
func (h *harness) nodeDB(i int) *sql.DB {
	h.wipe.mu.RLock()
	defer h.wipe.mu.RUnlock()
	return h.ndb[i]
}

// nodeDBList returns the handles of every node's database.
func (h *harness) nodeDBList() []*sql.DB {
	h.wipe.mu.RLock()
	defer h.wipe.mu.RUnlock()
	return append([]*sql.DB(nil), h.ndb...)
}

func (h *harness) closeStaleDBs() {
	h.wipe.mu.Lock()
	defer h.wipe.mu.Unlock()
	for _, db := range h.wipe.stale {
		db.Close()
	}
	h.wipe.stale = nil
}

// wipes runs cfg.Wipes episodes spread over the fault phase.
func (h *harness) wipes(ctx context.Context, done <-chan struct{}) {
	if len(h.nodes) < 2 {
		return
	}
	h.episodes(ctx, done, h.cfg.Wipes, h.cfg.Duration, func(e int) bool {
		h.wipeEpisode(ctx, e)
		return true
	})
}

// latestSnapshot reads the feed's latest published snapshot.
func (h *harness) latestSnapshot(ctx context.Context) (snapshot.Record, error) {
	cfg := snapshot.CatalogConfig{Feed: feed.SourceConfig{FileDir: h.feedDir}}
	cfg.Feed.NATS.URLs = []string{h.natsURL}
	name := "jetstream"
	if h.cfg.Feed == FeedFile {
		name = filesource.Name
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cat, err := snapshot.OpenCatalog(ctx, name, cfg)
	if err != nil {
		return snapshot.Record{}, err
	}
	defer closeQuietly(cat)
	return cat.Latest(ctx)
}

// wipeEpisode wipes one node other than node1 (and other than the
// disk-full episode's node, whose check would see a node restoring instead
// of a full disk): stop it (no other harness
// fault touches it meanwhile), delete its database, restart it, and wait
// until it has restored a snapshot and answers healthy.
func (h *harness) wipeEpisode(ctx context.Context, e int) {
	rec, err := h.latestSnapshot(ctx)
	if err != nil {
		h.logf("node wiped %d: no published snapshot yet (%v); skipped", e, err)
		return
	}
	candidates := len(h.nodes) - 1 // not node1, the snapshot publisher
	if h.cfg.DiskFull && candidates > 1 {
		candidates-- // nor the last node, whose database sits on the disk-full episode's tmpfs
	}
	i := 1 + h.intn(candidates)
	p := h.nodes[i]
	h.mu.Lock()
	busy := h.protect[i] > 0 || h.stopped[i]
	if !busy {
		h.protect[i]++
	}
	h.mu.Unlock()
	if busy {
		h.logf("node wiped %d: %s is in another episode; skipped", e, p.name)
		return
	}
	defer func() {
		h.mu.Lock()
		h.protect[i]--
		h.mu.Unlock()
	}()
	h.wipe.inject.Lock()
	defer h.wipe.inject.Unlock()
	// No broker restart or stall while the node restores: the fault under
	// test is the wipe, and its restore must be seen to happen.
	h.brokerMu.Lock()
	defer h.brokerMu.Unlock()
	p.hold(true)
	p.killAndWait()
	before := strings.Count(readFile(p.logf), "bootstrap: restored the feed's latest snapshot")
	path := h.nodeDBs[i]
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			h.problemf("node wiped %d: remove %s: %v", e, f, err)
		}
	}
	h.mu.Lock()
	h.rep.Wipes++
	h.mu.Unlock()
	h.logf("node wiped %d: %s's database deleted; restarting it (latest snapshot at cursor %d)", e, p.name, rec.ControlVersion)
	p.hold(false)
	restored := waitFor(ctx, 60*time.Second, func() bool {
		return strings.Count(readFile(p.logf), "bootstrap: restored the feed's latest snapshot") > before
	})
	if !restored {
		h.problemf("node wiped %d: %s did not bootstrap from a published snapshot within 60s", e, p.name)
		return
	}
	var db *sql.DB
	if !waitFor(ctx, 60*time.Second, func() bool {
		var err error
		db, err = node.OpenDBReadOnly(ctx, path)
		return err == nil
	}) {
		h.problemf("node wiped %d: cannot open %s's restored database", e, p.name)
		return
	}
	h.wipe.mu.Lock()
	h.wipe.stale = append(h.wipe.stale, h.ndb[i])
	h.ndb[i] = db
	h.wipe.mu.Unlock()
	h.mu.Lock()
	h.rep.WipesRestored++
	h.mu.Unlock()
	h.logf("node wiped %d: %s restored a snapshot and resumed", e, p.name)
}

// readFile returns the file's content ("" if unreadable).
func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// problemf records a problem under the harness's lock.
func (h *harness) problemf(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.problemf(format, args...)
}

func closeQuietly(v any) {
	if c, ok := v.(io.Closer); ok {
		c.Close()
	}
}
