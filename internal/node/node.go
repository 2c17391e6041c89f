// Package node wires one controlfeed process together from a Config: it opens
// the SQLite database, the artifact store and the feed backends by name,
// migrates the schemas, and runs the outbox pump (when a sink is configured),
// the applier (when a source is configured) and an HTTP server for health,
// status and metrics. The controlfeed command and its demo use it; libraries
// do not.
//
// # Configuration
//
// Config names backends by their registered names; this package imports no
// backend, so the program links only the backends it blank-imports. A nil or
// zero Config field selects the default documented on it.
//
// # Roles
//
// A process with FeedSink != "nop" is a producer: its pump drains the outbox
// of DB into the sink. A process with FeedSource != "nop" is a fleet node: its
// applier applies the feed to DB with Config.Handlers (kv.Handlers by
// default). A process may be neither (the single-node default, where local
// writes are simply not published), but not both: one database is either a
// producer's or a node's.
//
// Open records the role in the database (package dbrole) the first time it
// opens it as a producer or a node, and refuses, before migrating or
// changing anything, to open it in the other role afterwards. On a node's
// database kv.Put and kv.Delete refuse local writes.
//
// # The pump's artifact store
//
// A producer records in its database which artifact store its pump
// publishes references into: the backend and its location
// (outbox.RecordArtifactStore with artifact.Locate's answer; the file
// store's absolute directory, the jetstream store's bucket, not the NATS
// URLs). Open refuses a sink with another store than the recorded one
// (outbox.ErrArtifactStoreMismatch): events already in the outbox and the
// feed name artifacts that the nodes fetch from the recorded store. Writers
// that store artifacts (controlfeed kv put) check the record before storing
// anything. To change the store on purpose, see package outbox.
//
// # One pump per producer database
//
// A producer takes an exclusive flock(2) on DB + PumpLockSuffix
// ("producer.db.pump.lock") in Open and holds it until Close, and writes its
// pid and host into the file. A second Open with a sink on the same database,
// in this process or another, fails at once with an error naming the holder;
// it does not wait as a standby (a supervisor restarts it). The kernel
// releases the lock when the holder exits in any way, SIGKILL included, so a
// crash never leaves a stale lock; the file stays as a record of the last
// holder. The lock needs a local file system with flock, which SQLite's WAL
// needs anyway.
//
// # Errors
//
// Errors begin with "node:" and the operation, and wrap the error of the
// package that failed (feed, artifact, outbox, applier, kv, sqlitedb), so
// errors.Is works on their sentinels.
package node

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/dbrole"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/nop"
	"github.com/controlfeed/controlfeed/fleet"
	"github.com/controlfeed/controlfeed/internal/console"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
	"github.com/controlfeed/controlfeed/kv"
	"github.com/controlfeed/controlfeed/outbox"
	"github.com/controlfeed/controlfeed/snapshot"
	"github.com/controlfeed/controlfeed/trust"
)

// Defaults of Config.
const (
	// DefaultFeed is the feed backend of an empty FeedSource or FeedSink.
	DefaultFeed = nop.Name
	// DefaultArtifactStore is the store of an empty ArtifactStore.
	DefaultArtifactStore = "file"
	// ArtifactDirSuffix is appended to DB to form the default artifact
	// directory of the file store.
	ArtifactDirSuffix = ".artifacts"
	// ShutdownTimeout bounds how long Run waits for in-flight HTTP requests
	// once its context is done.
	ShutdownTimeout = 5 * time.Second
	// DefaultAppDigestInterval is Config.AppDigestInterval's default.
	DefaultAppDigestInterval = 30 * time.Second
)

// Config describes one process. Zero values select the documented defaults.
type Config struct {
	// DB is the path of the SQLite database (required). It is created if
	// missing and migrated (outbox, applier and kv schemas). Its role is
	// recorded and checked, and a producer locks DB + PumpLockSuffix (see
	// the package documentation).
	DB string

	// FeedSource is the registered feed.Source backend the applier reads;
	// "" = "nop" = no applier.
	FeedSource string
	// FeedSink is the registered feed.Sink backend the pump publishes to;
	// "" = "nop" = no pump.
	FeedSink string
	// Feed is passed to the feed backends.
	Feed feed.SourceConfig

	// ArtifactStore is the registered artifact.Store backend; "" = "file".
	ArtifactStore string
	// Artifact is passed to the store. For the file store, an empty Dir
	// means DB + ".artifacts"; a nil Artifact.Logger means Logger. A node must read the store its producer
	// writes to. Open sets Artifact.NATS.Create when FeedSink is not nop:
	// the producer creates (and checks) the jetstream artifact bucket,
	// after its Sink has created (and checked) the feed stream, and before
	// its pump publishes anything; a node only opens them.
	Artifact artifact.Config

	// Listen is the TCP address of the HTTP server (/healthz, /v1/status,
	// /metrics); "" = no HTTP server. An address without a host (":7480")
	// binds the loopback interface, 127.0.0.1; an explicit host (0.0.0.0,
	// [::], an interface's address) is used as given, and Open logs a
	// warning when it is not a loopback address and ListenToken is empty.
	// Port 0 picks a free port; see Node.Addr.
	Listen string
	// ListenToken, if set, is the bearer token every HTTP request must
	// carry ("Authorization: Bearer TOKEN"), compared in constant time;
	// others get 401. /healthz stays open for load balancers and probes,
	// but without the token it answers only "ok" or "unhealthy", not the
	// reasons (which name events and errors). At least MinListenTokenLen
	// characters, no spaces. Never logged.
	ListenToken string
	// ListenTLSCertFile and ListenTLSKeyFile, set together, make the HTTP
	// server speak TLS (1.2 or later) with that certificate chain and key
	// (PEM), loaded once by Open: restart the process to rotate them.
	ListenTLSCertFile, ListenTLSKeyFile string

	// NodeName names this node in status and logs.
	NodeName string

	// PollInterval is how often the pump and the applier poll when idle;
	// 0 = their own defaults.
	PollInterval time.Duration

	// UnavailableGrace is how long the applier may be unavailable (see
	// Status.Unavailable) before /healthz reports it; 0 =
	// DefaultUnavailableGrace. Status and /metrics show it at once.
	UnavailableGrace time.Duration

	// StallThreshold is how long the pump and the applier may make no
	// progress before /healthz reports it: a publish or a feed/store call
	// in flight for longer, a pending outbox row older than it (in a
	// process that runs a pump), or a node whose cursor has not moved for
	// that long while the feed holds events after it. 0 =
	// DefaultStallThreshold.
	StallThreshold time.Duration

	// MaxArtifactBytes is the largest artifact the applier fetches; a
	// larger one halts it (applier.Config.MaxPayloadBytes). 0 =
	// applier.DefaultMaxPayloadBytes. Producers must refuse larger values
	// (kv.PutLimit with the same limit).
	MaxArtifactBytes int64

	// BehindRetentionAdvice, if set, is added to Status.BehindRetention
	// (and so to /healthz and the status) when the applier finds the node
	// behind the feed's retention: what fixes it here (the program's
	// snapshot restore command, or why no snapshot can).
	BehindRetentionAdvice string

	// SigningKey, if set, makes the pump sign every event it publishes
	// (outbox.Config.Signer). Only for a process with a FeedSink.
	SigningKey *trust.PrivateKey
	// TrustedKeys, if set, makes the applier verify every event before
	// anything else and refuse what fails (applier.Config.Keyring). Only
	// for a process with a FeedSource. nil trusts whatever the feed holds.
	TrustedKeys *trust.Keyring
	// Snapshots, if set on a node (a FeedSource other than nop), makes Run
	// take, publish and garbage-collect snapshots of the database on its
	// cadence (see snapshot.Periodic); Open fills in DB, Store, Catalog
	// (the feed's, snapshot.OpenCatalog), Logger and Registerer. Its
	// state shows in Status.Snapshots and as controlfeed_snapshot_*
	// metrics.
	Snapshots *snapshot.PeriodicConfig

	// Handlers applies events by type; nil = kv.Handlers().
	Handlers map[string]applier.Handler

	// AppDigest is the application's digest of its state, shown beside
	// the state digest in Status (see Status.AppDigest); nil with nil
	// Handlers = kv.TableDigest, nil otherwise = none.
	AppDigest applier.AppDigestFunc
	// AppDigestInterval is the least time between two computations of
	// AppDigest by Status; 0 = DefaultAppDigestInterval.
	AppDigestInterval time.Duration

	// FleetReports makes a node (a process with a feed source) write its
	// fleet report (see package fleet) to the report store of its feed
	// backend, opened with fleet.Open(FeedSource, ...): on change, at
	// most every FleetDebounce, and every FleetHeartbeat. A store that
	// cannot be opened (no backend registered for the feed) is logged and
	// the node runs without reports; a failing write is logged and
	// retried, never stops the node.
	FleetReports bool
	// FleetHeartbeat and FleetDebounce are the Reporter's intervals; 0 =
	// fleet.DefaultHeartbeat and fleet.DefaultDebounce.
	FleetHeartbeat, FleetDebounce time.Duration
	// Version is the controlfeed version the fleet report names.
	Version string

	// WrapSource, if set, wraps the opened feed source (not nop) before the
	// applier uses it: for instrumentation such as the demo's latency
	// measurement. The wrapper must forward the optional interfaces the
	// applier detects (feed.Acker, feed.CumulativeAcker, feed.Waiter,
	// feed.HeadReporter, feed.GapChecker) and io.Closer, which Close calls;
	// whatever it does not forward, the applier does without. A wrapper
	// must implement feed.GapChecker only if the source it wraps does: it
	// promises dense positions.
	WrapSource func(feed.Source) feed.Source

	// Logger receives the process's logs; nil discards them.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	c.FeedSource = cmp.Or(c.FeedSource, DefaultFeed)
	c.FeedSink = cmp.Or(c.FeedSink, DefaultFeed)
	c.ArtifactStore = cmp.Or(c.ArtifactStore, DefaultArtifactStore)
	if c.Artifact.Dir == "" && c.DB != "" && !IsPostgresURL(c.DB) {
		c.Artifact.Dir = c.DB + ArtifactDirSuffix
	}
	if c.Handlers == nil {
		c.Handlers = kv.Handlers()
		if c.AppDigest == nil {
			c.AppDigest = kv.TableDigest
		}
	}
	c.AppDigestInterval = cmp.Or(c.AppDigestInterval, DefaultAppDigestInterval)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports a Config that cannot work. Unknown backend names are
// reported by Open, which lists the registered ones.
func (c *Config) Validate() error {
	if c.DB == "" {
		return errors.New("node: config: DB is empty (set --db)")
	}
	if c.PollInterval < 0 {
		return fmt.Errorf("node: config: PollInterval %v is negative", c.PollInterval)
	}
	if c.StallThreshold < 0 {
		return fmt.Errorf("node: config: StallThreshold %v is negative (set --stall-threshold to 0 for the default)", c.StallThreshold)
	}
	if c.MaxArtifactBytes < 0 {
		return fmt.Errorf("node: config: MaxArtifactBytes %d is negative (set --max-artifact-bytes to 0 for the default)", c.MaxArtifactBytes)
	}
	if err := c.validateListen(); err != nil {
		return err
	}
	if c.UnavailableGrace < 0 {
		return fmt.Errorf("node: config: UnavailableGrace %v is negative (set --unavailable-grace to 0 for the default)", c.UnavailableGrace)
	}
	if src, sink := cmp.Or(c.FeedSource, DefaultFeed), cmp.Or(c.FeedSink, DefaultFeed); src != nop.Name && sink != nop.Name {
		return fmt.Errorf("node: config: feed source %q and feed sink %q on one database %s: a database is either a producer's "+
			"(--feed-sink: its pump publishes its outbox) or a node's (--feed-source: its applier applies a feed), not both; "+
			"run a producer and a node as two processes with two databases", src, sink, RedactDB(c.DB))
	}
	if IsPostgresURL(c.DB) {
		return c.validatePostgres()
	}
	if c.SigningKey != nil && cmp.Or(c.FeedSink, DefaultFeed) == nop.Name {
		return fmt.Errorf("node: config: a signing key (%s) is given but %s runs no pump (no --feed-sink): only a producer signs; a node takes --trust-key", c.SigningKey.ID(), c.DB)
	}
	if c.TrustedKeys != nil && cmp.Or(c.FeedSource, DefaultFeed) == nop.Name {
		return fmt.Errorf("node: config: trusted keys are given but %s applies no feed (no --feed-source): only a node verifies; a producer takes --signing-key", c.DB)
	}
	return nil
}

// role is the database role the configuration opens DB in: Producer with a
// sink, Node with a source, None with neither (Validate refuses both).
func (c *Config) role() dbrole.Role {
	switch {
	case c.FeedSink != nop.Name:
		return dbrole.Producer
	case c.FeedSource != nop.Name:
		return dbrole.Node
	}
	return dbrole.None
}

// Node is one opened process: database, store, backends, and the pump and
// applier that Run drives. Its methods are safe for concurrent use.
type Node struct {
	cfg     Config
	log     *slog.Logger
	db      *sql.DB
	store   artifact.Store
	source  feed.Source // nil when FeedSource is nop
	sink    feed.Sink   // nil when FeedSink is nop
	pump    *outbox.Pump
	applier *applier.Applier
	snaps   *snapshot.Periodic // nil without Config.Snapshots
	catalog snapshot.Catalog   // the snapshotter's, closed by Close
	ln      net.Listener
	lock    *pumpLock // held by a producer from Open to Close
	// reports and reporter write the fleet report (nil without
	// Config.FleetReports or when the store could not be opened).
	reports  fleet.Store
	reporter *fleet.Reporter
	// cons is what the console (Handler's "/") opened for itself.
	cons consoleReader
	// console is built by Handler's first call.
	console     *console.Console
	consoleOnce sync.Once
	reg         *prometheus.Registry

	mu      sync.Mutex
	pumpErr error // fatal error of pump.Run, for health
	// lastDBStatus is the last status read from the database, shown with
	// Status.DatabaseError while the database cannot be read.
	lastDBStatus Status
	started      time.Time
	// appMu serialises the application digest's computations; app is
	// the latest that succeeded (nil before the first).
	appMu    sync.Mutex
	app      *AppDigest
	appTried time.Time // the latest computation, failed or not
	// fleet holds what FleetReport keeps between reports.
	fleet fleetCounts
	// behind tracks how long the cursor has stayed put while the feed
	// holds events after it (see Status.StalledSince).
	behind struct {
		cursor uint64
		since  time.Time
	}
}

// Open opens everything cfg names, migrates the database and, if cfg.Listen
// is set, binds the HTTP listener (so a busy port fails here, not in Run).
// Nothing runs until Run. On error everything opened so far is closed.
//
// With a sink, Open first takes the database's pump lock and fails if
// another pump holds it (see the package documentation). It refuses a
// database recorded in the other role before migrating it, and records the
// role once everything else has opened. With a sink it likewise refuses a
// database whose outbox records another artifact store than the
// configuration's, before opening any backend when the database exists,
// and records the store last (see "The pump's artifact store" in the
// package documentation).
func Open(ctx context.Context, cfg *Config) (_ *Node, err error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	c.setDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: c, log: c.Logger.With("node", c.NodeName), started: time.Now()}
	n.reg = n.newRegistry()
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	// An existing database is refused first, before a backend, the lock
	// file or a migration changes anything; a new one is created only once
	// the backends have opened.
	role := c.role()
	if IsPostgresURL(c.DB) {
		role = dbrole.None // recorded on SQLite only: PostgreSQL is always a producer's
	} else if _, statErr := os.Stat(c.DB); statErr == nil {
		if err := n.openDB(ctx, role); err != nil {
			return nil, err
		}
	}

	// The sink first: it may create a file feed's directory, which a
	// source never does.
	sink, err := feed.OpenSink(c.FeedSink, c.Feed)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	if sink.Name() == nop.Name {
		closeQuietly(sink)
	} else {
		n.sink = sink
	}
	src, err := feed.Open(c.FeedSource, c.Feed)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	if src.Name() == nop.Name {
		closeQuietly(src)
	} else {
		n.source = src
		if c.WrapSource != nil {
			n.source = c.WrapSource(src)
		}
	}
	if n.sink != nil {
		c.Artifact.NATS.Create = true
	}
	acfg := c.Artifact
	if acfg.Logger == nil {
		acfg.Logger = n.log
	}
	if n.store, err = artifact.Open(c.ArtifactStore, acfg); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	if IsPostgresURL(c.DB) {
		if n.db, err = OpenPostgres(ctx, c.DB, c.NodeName); err != nil {
			return nil, err
		}
	} else {
		if n.db == nil {
			if err := n.openDB(ctx, role); err != nil {
				return nil, err
			}
		}
		if err = migrate(ctx, n.db, c.DB); err != nil {
			return nil, err
		}
	}
	if err := n.checkArtifactStore(ctx); err != nil {
		return nil, err
	}
	if n.sink != nil {
		n.pump, err = outbox.NewPump(n.db, n.sink, &outbox.Config{
			Logger:       n.log, // the pump adds component=outbox.pump
			PollInterval: c.PollInterval,
			Registerer:   n.reg,
			Signer:       c.SigningKey,
		})
		if err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
		if c.SigningKey != nil {
			if err := outbox.CheckSigner(ctx, n.db, c.SigningKey.ID()); err != nil {
				return nil, fmt.Errorf("node: %s: %w", c.DB, err)
			}
		}
	}
	if n.source != nil {
		n.applier, err = applier.New(n.db, n.source, n.store, &applier.Config{
			Handlers:        c.Handlers,
			Logger:          n.log, // the applier adds component=applier
			PollInterval:    c.PollInterval,
			MaxPayloadBytes: c.MaxArtifactBytes,
			Registerer:      n.reg,
			Keyring:         c.TrustedKeys,
		})
		if err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
	}
	if c.FleetReports && n.applier != nil {
		n.openReporter(ctx)
	}
	if c.Snapshots != nil && n.applier != nil {
		if err := n.openSnapshots(ctx); err != nil {
			return nil, err
		}
	}
	if c.Listen != "" {
		if err := n.listen(ctx); err != nil {
			return nil, err
		}
	}
	if role != dbrole.None {
		if err := dbrole.Record(ctx, n.db, role); err != nil {
			return nil, fmt.Errorf("node: %s: %w", c.DB, err)
		}
	}
	if n.sink != nil {
		st, err := n.artifactStore()
		if err != nil {
			return nil, err
		}
		if err := outbox.RecordArtifactStore(ctx, n.db, st); err != nil {
			return nil, fmt.Errorf("node: %s: %w", RedactDB(c.DB), err)
		}
	}
	return n, nil
}

// artifactStore names the artifact store of the configuration (backend and
// artifact.Locate's location) as the outbox records it.
func (n *Node) artifactStore() (outbox.ArtifactStore, error) {
	loc, err := artifact.Locate(n.cfg.ArtifactStore, n.cfg.Artifact)
	if err != nil {
		return outbox.ArtifactStore{}, fmt.Errorf("node: %w", err)
	}
	return outbox.ArtifactStore{Backend: n.cfg.ArtifactStore, Location: loc}, nil
}

// checkArtifactStore refuses, for a producer (a process with a sink), a
// database whose outbox records another artifact store than the
// configuration's (outbox.CheckArtifactStore): events already queued or
// published name artifacts nodes fetch from the recorded store. It only
// reads; a node or a single-node process checks nothing.
func (n *Node) checkArtifactStore(ctx context.Context) error {
	if n.cfg.FeedSink == nop.Name {
		return nil
	}
	st, err := n.artifactStore()
	if err != nil {
		return err
	}
	if err := outbox.CheckArtifactStore(ctx, n.db, st); err != nil {
		return fmt.Errorf("node: %s: %w", RedactDB(n.cfg.DB), err)
	}
	return nil
}

// openSnapshots opens the feed's snapshot catalog and the periodic
// snapshotter of Config.Snapshots.
func (n *Node) openSnapshots(ctx context.Context) error {
	cat, err := snapshot.OpenCatalog(ctx, n.cfg.FeedSource, snapshot.CatalogConfig{Feed: n.cfg.Feed, Logger: n.log})
	if err != nil {
		return fmt.Errorf("node: periodic snapshots: %w", err)
	}
	n.catalog = cat
	pc := *n.cfg.Snapshots
	pc.DB, pc.Store, pc.Catalog, pc.Registerer = n.db, n.store, cat, n.reg
	pc.Logger = n.log.With("component", "snapshot")
	if pc.Create.Node == "" {
		pc.Create.Node = n.cfg.NodeName
	}
	if pc.Create.TempDir == "" {
		pc.Create.TempDir = filepath.Dir(n.cfg.DB) // room for a copy beside the database, not in a small /tmp
	}
	if n.snaps, err = snapshot.NewPeriodic(&pc); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}

// OpenDB opens the SQLite database at path with sqlitedb.Open and migrates
// the outbox, applier and kv schemas (idempotent). It neither checks nor
// records a role (package dbrole): Open does. The caller closes it.
func OpenDB(ctx context.Context, path string) (*sql.DB, error) {
	db, err := openChecked(ctx, path, dbrole.None)
	if err != nil {
		return nil, err
	}
	if err := migrate(ctx, db, path); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// openChecked opens the database at path with sqlitedb.Open and, before
// anything writes to it, refuses one recorded in a role other than role
// (dbrole.Check); None checks nothing.
func openChecked(ctx context.Context, path string, role dbrole.Role) (*sql.DB, error) {
	db, err := sqlitedb.Open(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	if role != dbrole.None {
		if err := dbrole.Check(ctx, db, role); err != nil {
			db.Close()
			return nil, fmt.Errorf("node: %s: %w", path, err)
		}
	}
	return db, nil
}

// migrate runs the outbox, applier and kv migrations on db (at path).
func migrate(ctx context.Context, db *sql.DB, path string) error {
	for _, m := range []func(context.Context, *sql.DB) error{outbox.Migrate, applier.Migrate, kv.Migrate} {
		if err := m(ctx, db); err != nil {
			return fmt.Errorf("node: migrate %s: %w", path, err)
		}
	}
	return nil
}

// openDB opens the database, refusing one recorded in another role, and,
// for a producer, refuses one whose pump used another artifact store and
// takes the pump lock.
func (n *Node) openDB(ctx context.Context, role dbrole.Role) (err error) {
	if n.db, err = openChecked(ctx, n.cfg.DB, role); err != nil {
		return err
	}
	if role == dbrole.Producer {
		if err := n.checkArtifactStore(ctx); err != nil {
			return err
		}
		if n.lock, err = lockPump(n.cfg.DB); err != nil {
			return err
		}
	}
	return nil
}

// DB returns the node's database.
func (n *Node) DB() *sql.DB { return n.db }

// Store returns the node's artifact store.
func (n *Node) Store() artifact.Store { return n.store }

// Addr returns the HTTP listener's address, or nil without Config.Listen.
func (n *Node) Addr() net.Addr {
	if n.ln == nil {
		return nil
	}
	return n.ln.Addr()
}

// listenAddr is Addr as a string for logs, "" without a listener.
func (n *Node) listenAddr() string {
	if a := n.Addr(); a != nil {
		return a.String()
	}
	return ""
}

// Pump returns the outbox pump, or nil when the sink is nop.
func (n *Node) Pump() *outbox.Pump { return n.pump }

// Applier returns the applier, or nil when the source is nop.
func (n *Node) Applier() *applier.Applier { return n.applier }

// Run runs the pump, the applier and the HTTP server until ctx is done, then
// stops them and returns nil. If one of them fails for good, Run stops the
// others and returns that error. Run may be called once; Close afterwards.
func (n *Node) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	var firstErr error
	var errOnce sync.Once
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err })
		cancel(err)
	}
	store := cmp.Or(n.cfg.ArtifactStore, DefaultArtifactStore)
	attrs := []any{"db", RedactDB(n.cfg.DB), "feed_source", n.cfg.FeedSource, "feed_sink", n.cfg.FeedSink, "artifact_store", store}
	if store == DefaultArtifactStore { // the jetstream store has a bucket, not a directory
		attrs = append(attrs, "artifact_dir", n.cfg.Artifact.Dir)
	}
	n.log.Info("controlfeed node starting", append(attrs, "listen", n.listenAddr())...)
	if n.pump != nil && n.cfg.SigningKey != nil {
		n.log.Info("the pump signs every event it publishes", "signing_key", n.cfg.SigningKey.ID())
	}
	if n.applier != nil {
		if kr := n.cfg.TrustedKeys; kr != nil {
			n.log.Info("the applier verifies every event: it applies only events signed by a trusted key, in chain order",
				"trusted_keys", strings.Join(kr.IDs(), ","))
		} else {
			n.log.Info("the applier verifies no signature (no --trust-key): it applies whatever the feed holds; see docs/SECURITY.md")
		}
	}
	if n.pump == nil && n.applier == nil {
		n.log.Info("feed source and sink are both nop: single-node mode, local writes are not published and nothing is applied; set --feed-sink on a producer or --feed-source on a node")
	}
	if n.pump != nil {
		wg.Go(func() {
			err := n.pump.Run(ctx)
			if err != nil && ctx.Err() != nil {
				n.log.Warn("pump did not stop cleanly", "err", err)
			} else if err != nil {
				n.mu.Lock()
				n.pumpErr = err
				n.mu.Unlock()
				fail(fmt.Errorf("node: pump: %w", err))
			}
		})
	}
	if n.applier != nil {
		wg.Go(func() {
			if err := n.applier.Run(ctx); err != nil && ctx.Err() == nil {
				fail(fmt.Errorf("node: applier: %w", err))
			}
		})
	}
	if n.reporter != nil {
		wg.Go(func() { n.reporter.Run(ctx) })
	}
	if n.snaps != nil {
		wg.Go(func() { n.snaps.Run(ctx) })
	}
	if n.ln != nil {
		srv := &http.Server{Handler: n.Handler(), ReadHeaderTimeout: 10 * time.Second}
		wg.Go(func() {
			if err := srv.Serve(n.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				fail(fmt.Errorf("node: http: %w", err))
			}
		})
		wg.Go(func() {
			<-ctx.Done()
			sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
			defer scancel()
			srv.Shutdown(sctx)
		})
	}
	<-ctx.Done()
	wg.Wait()
	if firstErr != nil {
		n.log.Error("controlfeed node stopped", "err", firstErr)
		return firstErr
	}
	n.log.Info("controlfeed node stopped")
	return nil
}

// Close releases the database, the store, the backends and the listener. Call
// it after Run returns.
func (n *Node) Close() error {
	var errs []error
	if n.ln != nil {
		if err := n.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, n.closeConsole()...)
	if n.reports != nil {
		errs = append(errs, closeQuietly(n.reports))
	}
	if n.source != nil {
		errs = append(errs, closeQuietly(n.source))
	}
	if n.catalog != nil {
		errs = append(errs, closeQuietly(n.catalog))
	}
	if n.sink != nil {
		errs = append(errs, closeQuietly(n.sink))
	}
	if n.store != nil {
		if c, ok := n.store.(artifact.Closer); ok {
			errs = append(errs, c.Close())
		}
	}
	if n.db != nil {
		errs = append(errs, n.db.Close())
	}
	errs = append(errs, n.lock.unlock())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("node: close: %w", err)
	}
	return nil
}

// closeQuietly closes v if it is an io.Closer.
func closeQuietly(v any) error {
	if c, ok := v.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// openReporter opens the fleet report store of the node's feed and its
// Reporter; a failure is logged and leaves the node without reports.
func (n *Node) openReporter(ctx context.Context) {
	if err := fleet.ValidateNodeName(n.cfg.NodeName); err != nil {
		n.log.Warn("node: no fleet reports: the node name cannot name a report", "err", err)
		return
	}
	st, err := fleet.Open(ctx, n.cfg.FeedSource, fleet.Config{Feed: n.cfg.Feed, Logger: n.log})
	if err != nil {
		n.log.Warn("node: no fleet reports: cannot open the report store", "feed_source", n.cfg.FeedSource, "err", err)
		return
	}
	rep, err := fleet.NewReporter(st, func(ctx context.Context) (fleet.Report, error) {
		return n.FleetReport(ctx, n.cfg.Version)
	}, &fleet.ReporterConfig{Debounce: n.cfg.FleetDebounce, Heartbeat: n.cfg.FleetHeartbeat, Logger: n.log})
	if err != nil {
		closeQuietly(st)
		n.log.Warn("node: no fleet reports", "err", err)
		return
	}
	n.reports, n.reporter = st, rep
	n.reg.MustRegister(reporterMetrics(rep)...)
}
