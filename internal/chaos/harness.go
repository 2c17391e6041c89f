package chaos

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/artifact/filestore"
	"github.com/controlfeed/controlfeed/artifact/natsobject"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/filesource"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/internal/failpoint"
	"github.com/controlfeed/controlfeed/internal/freeport"
	"github.com/controlfeed/controlfeed/internal/netproxy"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/trust"
)

// Config sizes one chaos run. Zero fields take the CI-sized defaults.
type Config struct {
	// Binary is the controlfeed command (required): the pump and the nodes
	// are "controlfeed serve" processes; some skips use "controlfeed skip".
	Binary string
	// Self is the argv of a program that calls MaybeChild first (required):
	// the broker and the writer are children of it.
	Self []string
	// Dir holds every database, store and log of the run (required).
	Dir string
	// Feed is the feed backend: FeedJetStream (the default: a broker
	// process, with its restarts, stalls, cuts, forced duplicates, bad
	// inputs and duplicate node names) or FeedFile (a feed directory, with
	// held feed locks; see filefeed.go).
	Feed string
	// Artifacts is the artifact store: ArtifactsFile (the default: the
	// file store, on a tmpfs for the store-full episodes) or
	// ArtifactsJetStream (the broker's Object Store; jetstream feed only;
	// see objstore.go).
	Artifacts string
	// FeedLocks is the number of held feed locks of a FeedFile run.
	// Default 8.
	FeedLocks int
	// Nodes is the number of fleet nodes. Default 3.
	Nodes int
	// Events is the number of producer changes. Default 20000.
	Events int
	// Duration is the length of the fault phase; the writer spreads Events
	// over it. Default 4m.
	Duration time.Duration
	// DupWindow is the feed stream's duplicate window, short so that
	// outages and forced republishes outlast it. Default 2s.
	DupWindow time.Duration
	// Targets: kills per failure point, broker restarts, restarts whose
	// outage outlasts DupWindow, forced duplicate messages, bad inputs.
	// Defaults 25 (a margin over the 20 promised), 50, 5, 10000/Nodes
	// deliveries, 200.
	KillsPerPoint, BrokerRestarts, LongOutages, DuplicateDeliveries, BadInputs int
	// Stalls is the number of SIGSTOP..SIGCONT stalls (0.5–5 s) of the
	// broker and, as many again, of a random node; the pump gets half as
	// many. Default 15.
	Stalls int
	// DupNames is the number of duplicate-name episodes (a second process
	// with a node's name). Default 4.
	DupNames int
	// PowerLosses is the number of producer power losses simulated (see
	// powerloss.go). Default 3.
	PowerLosses int
	// StoreFulls is the number of episodes in which the artifact store is
	// at its size limit during the writer's uploads (see storefull.go).
	// Default 3.
	StoreFulls int
	// Wipes is the number of "node wiped" faults (see wipe.go): a node's
	// database is deleted while it is stopped and it must rejoin from the
	// snapshot node1 publishes periodically. Default 0: none
	// (TestChaos_FileFeed runs 2; CONTROLFEED_CHAOS_WIPES=N sets it for
	// every run).
	Wipes int
	// Signed runs the producer with a signing key and the nodes trusting
	// it, and makes the bad inputs forged events (forge.go) in place of the
	// legitimate bad kinds: each must be refused on every node with its own
	// security reason and passed with skip --security-override. Jetstream
	// feed with one broker only.
	Signed bool
	// HostileBroker adds, in a signed run, the hostile broker's dropped
	// and swapped producer events (hostile.go) to the forged kinds: the
	// nodes must halt at each with chain-gap and apply it after the
	// operator's stream repair. The test suite and controlfeed-chaos turn
	// it on with Signed.
	HostileBroker bool
	// DiskFull runs the disk-full episode on the last node (a real tmpfs
	// when it can be mounted, else the applier.before-commit=enospc point).
	DiskFull bool
	// Brokers is the number of broker processes: 1 (the default) or 3, a
	// NATS cluster with an R3 stream and bucket and its own faults, sized
	// by Cluster (jetstream feed and artifact store; see cluster.go).
	Brokers int
	Cluster ClusterConfig
	// Seed seeds the harness's choices; 0 picks one from the clock.
	Seed uint64
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

func (c *Config) setDefaults() {
	if c.Nodes == 0 {
		c.Nodes = 3
	}
	if c.Feed == "" {
		c.Feed = FeedJetStream
	}
	if c.Artifacts == "" {
		c.Artifacts = ArtifactsFile
	}
	if c.FeedLocks == 0 {
		c.FeedLocks = 8
	}
	if c.Events == 0 {
		c.Events = 20000
	}
	if c.Duration == 0 {
		c.Duration = 4 * time.Minute
	}
	if c.DupWindow == 0 {
		c.DupWindow = 2 * time.Second
	}
	if c.KillsPerPoint == 0 {
		c.KillsPerPoint = 25 // a margin over the 20 the suite promises
	}
	if c.BrokerRestarts == 0 {
		c.BrokerRestarts = 50
	}
	if c.LongOutages == 0 {
		c.LongOutages = 5
	}
	if c.DuplicateDeliveries == 0 {
		c.DuplicateDeliveries = 10000
	}
	if c.BadInputs == 0 {
		c.BadInputs = 200
	}
	if c.Stalls == 0 {
		c.Stalls = 15
	}
	if c.DupNames == 0 {
		c.DupNames = 4
	}
	if c.PowerLosses == 0 {
		c.PowerLosses = 3
	}
	if c.StoreFulls == 0 {
		c.StoreFulls = 3
	}
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano())
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

// points are the failure points the run kills processes at, by role.
var (
	writerPoints = []string{failpoint.KVAfterCommit, failpoint.FilestoreMidWrite, failpoint.KVAfterArtifactBeforeCommit}
	pumpPoints   = []string{failpoint.OutboxBeforePublish, failpoint.OutboxAfterPublishBeforeWriteback}
	nodePoints   = []string{failpoint.ApplierMidBatch, failpoint.ApplierAfterCommitBeforeAck}
)

// basePct is each point's kill probability per hit while below its target.
var basePct = map[string]float64{
	failpoint.KVAfterCommit:                     0.45,
	failpoint.FilestoreMidWrite:                 0.45,
	failpoint.KVAfterArtifactBeforeCommit:       0.45,
	failpoint.OutboxBeforePublish:               1,
	failpoint.OutboxAfterPublishBeforeWriteback: 1.5,
	failpoint.ApplierMidBatch:                   1,
	failpoint.ApplierAfterCommitBeforeAck:       0.7,
}

type harness struct {
	cfg  Config
	rng  *rand.Rand
	rmu  sync.Mutex
	logf func(format string, args ...any)

	dir, artDir, brokerDir, fpLog string
	brokerAddr, natsURL           string
	producerDB                    string
	nodeDBs                       []string
	nodeHTTP                      []string
	tmpfs                         string // mounted tmpfs of the last node, or ""

	broker, writer, pump *proc
	nodes                []*proc

	proxy     *netproxy.Proxy // between the pump and the broker
	restarted chan struct{}   // a broker restart happened (for the cuts)
	brokerMu  sync.Mutex      // held by a broker restart, a broker stall, a duplicate-name window

	calm chan struct{} // closed: children start without failpoints

	mu        sync.Mutex
	nodeFP    map[int]string // extra failpoint spec per node index (disk full fallback)
	rep       *Report
	nc        *nats.Conn
	js        jetstream.JetStream
	store     *filestore.Store
	obj       *natsobject.Store // the artifact bucket, with Artifacts = ArtifactsJetStream
	pdb       *sql.DB
	ndb       []*sql.DB
	injected  map[string]injection // by event id@cv key
	attacker  *trust.PrivateKey    // a signed run's untrusted key (forge.go)
	ring      *trust.Keyring       // a signed run's trusted key, to read chain seqs (hostile.go)
	pumpMu    sync.Mutex           // held by a power loss, a pump stall, and a dropped or swapped injection until its repair
	hostile   map[string]bool      // event ids of dropped and swapped injections: never force-duplicated
	published map[string]uint64    // harness-published event ids (new ids) -> cv
	forced    map[uint64]bool      // stream sequences of forced duplicates
	protect   map[int]int          // > 0: node in a duplicate-name window or the disk-full wait: no harness kill or stall
	stopped   map[int]bool         // nodes stopped by a stall
	quiet     map[int]bool         // nodes restarted without failure points (a duplicate-name episode)
	writerFP  string               // extra failure point of the writer's next start (store full without a tmpfs)
	storeMu   sync.Mutex           // held while the artifact store is full: the harness's own puts wait
	artTmpfs  bool                 // the artifact store is on a tmpfs of artSize bytes
	artSize   int64
	feedDir   string             // the feed directory of a FeedFile run
	fsrc      *filesource.Source // the harness's reader of it
	pumpFP    string             // extra failure point of the pump's next start (a power-loss image)
	pdbMu     sync.RWMutex       // guards pdb, replaced at a power loss
	cl        *cluster           // the members of a cluster run (Brokers > 1), or nil
	wipe      wipeState          // the "node wiped" faults (wipe.go); guards ndb
}

func (h *harness) intn(n int) int {
	h.rmu.Lock()
	defer h.rmu.Unlock()
	return h.rng.IntN(n)
}

// Run performs one chaos run: it starts a broker, a writer, a pump and
// cfg.Nodes nodes as OS processes, injects faults for cfg.Duration, lets
// everything converge without faults, stops the processes and checks every
// node against the producer. The returned Report holds the counts and the
// problems found; err is for a run that could not be performed at all.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Brokers > 1 && cfg.Artifacts == "" {
		cfg.Artifacts = ArtifactsJetStream
	}
	cfg.setDefaults()
	if cfg.Binary == "" || len(cfg.Self) == 0 || cfg.Dir == "" {
		return nil, fmt.Errorf("chaos: run: Binary, Self and Dir are required")
	}
	if cfg.Signed && (cfg.Brokers > 1 || cfg.Feed != FeedJetStream) {
		return nil, fmt.Errorf("chaos: run: Signed with Feed %q and %d brokers: a signed run forges on the jetstream feed of one broker", cfg.Feed, cfg.Brokers)
	}
	if cfg.Brokers > 1 {
		return runCluster(ctx, cfg)
	}
	if cfg.Feed != FeedJetStream && cfg.Feed != FeedFile {
		return nil, fmt.Errorf("chaos: run: Feed %q: want %q or %q", cfg.Feed, FeedJetStream, FeedFile)
	}
	if cfg.Artifacts != ArtifactsFile && (cfg.Artifacts != ArtifactsJetStream || cfg.Feed != FeedJetStream) {
		return nil, fmt.Errorf("chaos: run: Artifacts %q with Feed %q: want %q, or %q with the jetstream feed", cfg.Artifacts, cfg.Feed, ArtifactsFile, ArtifactsJetStream)
	}
	h := &harness{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 1)), calm: make(chan struct{}),
		nodeFP: map[int]string{}, injected: map[string]injection{}, published: map[string]uint64{}, forced: map[uint64]bool{},
		protect: map[int]int{}, stopped: map[int]bool{}, quiet: map[int]bool{}, restarted: make(chan struct{}, 1), hostile: map[string]bool{}}
	h.rep = newReport(cfg)
	h.logf = func(format string, args ...any) {
		fmt.Fprintf(cfg.Log, "chaos %s: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
	start := time.Now()
	if err := h.setup(ctx); err != nil {
		h.teardown()
		return nil, err
	}
	defer h.teardown()
	h.logf("seed %d; %s feed, %d events over %v, %d nodes, dup window %v; dir %s", cfg.Seed, cfg.Feed, cfg.Events, cfg.Duration, cfg.Nodes, cfg.DupWindow, cfg.Dir)
	js := cfg.Feed == FeedJetStream

	pctx, pcancel := context.WithCancel(ctx)
	bctx, bcancel := context.WithCancel(ctx) // the broker outlives the others: check reads the stream
	var sup, bsup sync.WaitGroup
	if js {
		bsup.Go(func() { h.broker.supervise(bctx, 20*time.Millisecond) })
	}
	defer func() { bcancel(); bsup.Wait() }()
	for _, p := range h.all()[1:] {
		sup.Go(func() { p.supervise(pctx, 20*time.Millisecond) })
	}
	connect := h.connect
	if !js {
		connect = func(context.Context) error { return h.openFeedDir() }
	}
	if err := connect(ctx); err != nil {
		pcancel()
		sup.Wait()
		return nil, err
	}

	// Fault phase.
	// The writer may need longer than Duration on a loaded machine (every
	// kill costs it a restart); the phase ends when it is done.
	fctx, fcancel := context.WithTimeout(ctx, cfg.Duration+max(cfg.Duration/2, 2*time.Minute))
	var inj sync.WaitGroup
	faultsDone := make(chan struct{})
	inj.Go(func() { h.randomKills(fctx, faultsDone) })
	inj.Go(func() { h.stalls(fctx, faultsDone, "node", cfg.Stalls) })
	inj.Go(func() { h.stalls(fctx, faultsDone, "pump", cfg.Stalls/2) })
	if js {
		inj.Go(func() { h.brokerLoop(fctx, faultsDone) })
		inj.Go(func() { h.duplicates(fctx, faultsDone) })
		inj.Go(func() { h.badInputs(ctx, faultsDone) }) // finishes the resolution in flight
		inj.Go(func() { h.stalls(fctx, faultsDone, "broker", cfg.Stalls) })
		inj.Go(func() { h.cuts(fctx, faultsDone) })
		inj.Go(func() { h.dupNames(fctx, faultsDone) })
	} else {
		inj.Go(func() { h.feedLocks(fctx, faultsDone) })
	}
	inj.Go(func() { h.powerLosses(fctx, faultsDone) })
	inj.Go(func() { h.wipes(fctx, faultsDone) })
	inj.Go(func() { h.storeFulls(fctx, faultsDone) })
	inj.Go(func() { h.healthWatch(fctx, faultsDone) })
	if cfg.DiskFull {
		inj.Go(func() { h.diskFull(fctx) })
	}
	tick := time.NewTicker(5 * time.Second)
	for {
		<-tick.C
		h.progress()
		if h.writer.finished() && time.Since(start) >= cfg.Duration || fctx.Err() != nil {
			break
		}
	}
	tick.Stop()
	close(faultsDone)
	inj.Wait()
	fcancel()
	h.rep.FaultPhase = time.Since(start)

	// Calm phase: restart everything without failpoints, let it converge.
	h.logf("fault phase over after %v; converging without faults", h.rep.FaultPhase.Round(time.Second))
	close(h.calm)
	h.broker.hold(false)
	for _, p := range append([]*proc{h.pump}, h.nodes...) {
		p.killAndWait()
	}
	if !h.writer.finished() {
		// A loaded machine slows the writer (every kill costs it a
		// restart); the checks hold for whatever it wrote. Only a writer
		// that stalled outright is a problem.
		h.writer.hold(true)
		h.writer.killAndWait()
		n, _ := outboxCount(ctx, h.producer())
		h.rep.WriterShort = fmt.Sprintf("the writer wrote %d of %d events before the fault phase's time limit", n, cfg.Events)
		if n < cfg.Events/2 {
			h.rep.problem("writer did not reach %d events during the fault phase: %s", cfg.Events, h.rep.WriterShort)
		}
	}
	convErr := h.converge(ctx, 3*time.Minute)
	if convErr != nil {
		h.rep.problem("%v", convErr)
	}
	pcancel()
	sup.Wait()
	for _, p := range h.all()[1:] {
		starts, bad, last := p.stats()
		h.rep.Starts[p.name] = starts
		if bad > 0 {
			h.rep.UnexpectedExits[p.name] = bad
			h.logf("%s: %d unexpected exits, last: %s", p.name, bad, last)
		}
	}
	h.rep.Kills = readKillLog(h.fpLog)
	if err := h.check(ctx); err != nil {
		h.rep.problem("check: %v", err)
	}
	bcancel()
	bsup.Wait()
	h.rep.Starts["broker"], _, _ = h.broker.stats()
	h.rep.Elapsed = time.Since(start)
	return h.rep, nil
}

func (h *harness) all() []*proc {
	return append([]*proc{h.broker, h.writer, h.pump}, h.nodes...)
}

func freeAddr() (string, error) { return freeport.Addr() }

func (h *harness) setup(ctx context.Context) error {
	c := h.cfg
	h.dir = c.Dir
	h.artDir = filepath.Join(h.dir, "artifacts")
	h.brokerDir = filepath.Join(h.dir, "broker")
	h.fpLog = filepath.Join(h.dir, "failpoints.log")
	if c.Feed == FeedFile {
		h.feedDir = filepath.Join(h.dir, "feed")
		if err := os.MkdirAll(h.feedDir, 0o755); err != nil {
			return fmt.Errorf("chaos: setup: %w", err)
		}
	}
	h.producerDB = filepath.Join(h.dir, "producer.db")
	for _, d := range []string{h.artDir, h.brokerDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("chaos: setup: %w", err)
		}
	}
	var err error
	if c.StoreFulls > 0 && c.Artifacts == ArtifactsFile {
		h.mountArtifactTmpfs()
	}
	if h.store, err = filestore.New(h.artDir, nil); err != nil {
		return fmt.Errorf("chaos: setup: %w", err)
	}
	if h.brokerAddr, err = freeAddr(); err != nil {
		return fmt.Errorf("chaos: setup: %w", err)
	}
	h.natsURL = "nats://" + h.brokerAddr
	if h.proxy, err = netproxy.Listen("127.0.0.1:0", h.brokerAddr); err != nil {
		return fmt.Errorf("chaos: setup: proxy: %w", err)
	}
	if c.DiskFull {
		h.tmpfs = filepath.Join(h.dir, "tmpfs")
		os.MkdirAll(h.tmpfs, 0o755)
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", h.tmpfs).CombinedOutput(); err != nil {
			h.logf("cannot mount a tmpfs (%v: %s); the disk-full episode uses the %s=enospc failure point", err, strings.TrimSpace(string(out)), failpoint.ApplierBeforeCommit)
			h.tmpfs = ""
		}
	}
	if h.pdb, err = node.OpenDB(ctx, h.producerDB); err != nil {
		return err
	}
	for i := range c.Nodes {
		dir := h.dir
		if h.tmpfs != "" && i == c.Nodes-1 {
			dir = h.tmpfs
		}
		p := filepath.Join(dir, fmt.Sprintf("node%d.db", i+1))
		db, err := node.OpenDB(ctx, p)
		if err != nil {
			return err
		}
		addr, err := freeAddr()
		if err != nil {
			return fmt.Errorf("chaos: setup: %w", err)
		}
		h.nodeDBs, h.ndb, h.nodeHTTP = append(h.nodeDBs, p), append(h.ndb, db), append(h.nodeHTTP, addr)
	}

	base := []string{"PATH=" + os.Getenv("PATH"), failpoint.EnvLog + "=" + h.fpLog}
	selfEnv := func(mode string, spec string) []string {
		return append(append([]string{ChildEnv + "=" + mode}, base...), failpoint.EnvSpec+"="+spec)
	}
	logf := func(name string) string { return filepath.Join(h.dir, name+".log") }
	h.broker = &proc{name: "broker", logf: logf("broker"),
		argv: append(append([]string{}, c.Self...), h.brokerAddr, h.brokerDir),
		env:  func() []string { return selfEnv("broker", "") }}
	common := []string{"--artifact-dir", h.artDir, "--poll-interval", "20ms", "--log-level", "info"}
	writerArts := h.artDir
	if c.Artifacts == ArtifactsJetStream {
		common = []string{"--artifact-store", "jetstream", "--poll-interval", "20ms", "--log-level", "info"}
		writerArts = h.natsURL
	}
	rate := int(float64(c.Events) / c.Duration.Seconds() * 1.25)
	h.writer = &proc{name: "writer", logf: logf("writer"), once: true,
		argv: append(append([]string{}, c.Self...), h.producerDB, writerArts, strconv.Itoa(c.Events), strconv.FormatUint(c.Seed, 10), strconv.Itoa(max(rate, 1))),
		env: func() []string {
			h.mu.Lock()
			extra := h.writerFP
			h.mu.Unlock()
			return selfEnv("writer", h.spec(writerPoints, extra))
		}}
	sinkArgs := []string{"--feed-sink", natsfeed.Name, "--nats-url", "nats://" + h.proxy.Addr(), // through the proxy
		"--nats-duplicate-window", c.DupWindow.String()}
	sourceArgs := []string{"--feed-source", natsfeed.Name, "--nats-url", h.natsURL, "--nats-duplicate-window", c.DupWindow.String()}
	if c.Feed == FeedFile {
		sinkArgs = []string{"--feed-sink", filesource.Name, "--feed-dir", h.feedDir}
		sourceArgs = []string{"--feed-source", filesource.Name, "--feed-dir", h.feedDir}
	}
	var nodeSign []string
	if c.Signed {
		pumpSign, ns, err := h.setupSigning()
		if err != nil {
			return err
		}
		sinkArgs, nodeSign = append(sinkArgs, pumpSign...), ns
	}
	h.pump = &proc{name: "pump", logf: logf("pump"),
		argv: append(append([]string{c.Binary, "serve", "--db", h.producerDB}, sinkArgs...), common...),
		env: func() []string {
			h.mu.Lock()
			extra := h.pumpFP
			h.mu.Unlock()
			return append(base, failpoint.EnvSpec+"="+h.spec(pumpPoints, extra))
		}}
	for i := range c.Nodes {
		name := fmt.Sprintf("node%d", i+1)
		h.nodes = append(h.nodes, &proc{name: name, logf: logf(name),
			argv: append(append([]string{c.Binary, "serve", "--db", h.nodeDBs[i], "--node-name", name,
				"--listen", h.nodeHTTP[i], "--stall-threshold", nodeStallThreshold.String(), "--unavailable-grace", nodeUnavailGrace.String()}, sourceArgs...), append(nodeSign, common...)...),
			env: func() []string {
				h.mu.Lock()
				extra, quiet := h.nodeFP[i], h.quiet[i]
				h.mu.Unlock()
				if quiet {
					return append(base, failpoint.EnvSpec+"="+extra)
				}
				return append(base, failpoint.EnvSpec+"="+h.spec(nodePoints, extra))
			}})
	}
	h.setupWipes()
	return nil
}

// spec returns the failpoint spec for a (re)start: each point at its base
// probability while below its kill target, at a fifth of it above; nothing
// once the run calms down.
func (h *harness) spec(points []string, extra string) string {
	select {
	case <-h.calm:
		return ""
	default:
	}
	kills := readKillLog(h.fpLog)
	var terms []string
	for _, p := range points {
		pct := basePct[p]
		if kills[p] >= h.cfg.KillsPerPoint {
			pct /= 5
		}
		terms = append(terms, fmt.Sprintf("%s=%s%%kill", p, strconv.FormatFloat(pct, 'f', -1, 64)))
	}
	if extra != "" {
		terms = append(terms, extra)
	}
	return strings.Join(terms, ",")
}

func readKillLog(path string) map[string]int {
	m := map[string]int{}
	f, err := os.Open(path)
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if s := strings.TrimSpace(sc.Text()); s != "" {
			m[s]++
		}
	}
	return m
}

// connect waits for the broker, then creates the stream with the run's
// duplicate window (as the pump would).
func (h *harness) connect(ctx context.Context) error {
	var err error
	deadline := time.Now().Add(30 * time.Second)
	for {
		h.nc, err = nats.Connect(h.natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("chaos: connect to broker %s: %w", h.natsURL, err)
	}
	if h.js, err = jetstream.New(h.nc); err != nil {
		return fmt.Errorf("chaos: jetstream: %w", err)
	}
	sink, err := natsfeed.NewSink(ctx, feed.NATSConfig{URLs: []string{h.natsURL}, DuplicateWindow: h.cfg.DupWindow}, &natsfeed.Options{Conn: h.nc})
	if err != nil {
		return fmt.Errorf("chaos: create stream: %w", err)
	}
	sink.Close()
	if h.cfg.Artifacts == ArtifactsJetStream {
		return h.openObjectStore(ctx)
	}
	return nil
}

func (h *harness) teardown() {
	if h.obj != nil {
		h.obj.Close()
	}
	if h.nc != nil {
		h.nc.Close()
	}
	if h.fsrc != nil {
		h.fsrc.Close()
	}
	for _, db := range h.nodeDBList() {
		db.Close()
	}
	h.closeStaleDBs()
	if h.pdb != nil {
		h.pdb.Close()
	}
	if h.proxy != nil {
		h.proxy.Close()
	}
	if h.tmpfs != "" {
		exec.Command("umount", "-l", h.tmpfs).Run()
	}
	if h.artTmpfs {
		exec.Command("umount", "-l", h.artDir).Run()
	}
}

func (h *harness) progress() {
	ctx := context.Background()
	n, _ := outboxCount(ctx, h.producer())
	ps, _ := node.ReadStatus(ctx, h.producer())
	var cur []string
	for _, db := range h.nodeDBList() {
		st, err := node.ReadStatus(ctx, db)
		if err != nil {
			cur = append(cur, "err")
			continue
		}
		s := strconv.FormatUint(st.Cursor, 10)
		if st.Halted != nil {
			s += "(halted)"
		}
		cur = append(cur, s)
	}
	k := readKillLog(h.fpLog)
	total := 0
	for _, v := range k {
		total += v
	}
	h.mu.Lock()
	r := h.rep
	h.logf("events %d (pending %d), node cursors %s, failpoint kills %d, random kills %d, broker restarts %d (long %d), forced dups %d, bad inputs %d, stalls %d/%d/%d, cuts %d, dup names %d, power losses %d, store fulls %d",
		n, ps.OutboxPending, strings.Join(cur, "/"), total, r.RandomKills, r.BrokerRestarts, r.LongOutages, r.ForcedDuplicates, r.badTotal(),
		r.Stalls["broker"], r.Stalls["node"], r.Stalls["pump"], r.Cuts, r.DupNameEpisodes, r.PowerLosses, r.StoreFulls)
	h.mu.Unlock()
}

// brokerLoop kills (SIGKILL or SIGTERM) and restarts the broker on the same
// port and store, holding it down briefly or, for LongOutages of the
// restarts, longer than the duplicate window.
func (h *harness) brokerLoop(ctx context.Context, done <-chan struct{}) {
	c := h.cfg
	interval := c.Duration / time.Duration(c.BrokerRestarts+20) // room for the outages and restarts themselves
	longEvery := max(c.BrokerRestarts/(c.LongOutages+1), 1)
	for i := 1; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case <-time.After(interval/2 + time.Duration(h.intn(int(interval)))):
		}
		long := i%longEvery == 0
		down := time.Duration(50+h.intn(400)) * time.Millisecond
		if long {
			down = c.DupWindow + time.Second + time.Duration(h.intn(1000))*time.Millisecond
		}
		h.brokerMu.Lock()
		h.broker.hold(true)
		sig := syscall.SIGKILL
		if h.intn(3) == 0 {
			sig = syscall.SIGTERM
		}
		if !h.broker.signal(sig) {
			h.broker.hold(false)
			h.brokerMu.Unlock()
			continue
		}
		for h.broker.running() {
			time.Sleep(5 * time.Millisecond)
		}
		sleepCtx(ctx, down)
		h.broker.hold(false)
		h.brokerMu.Unlock()
		select {
		case h.restarted <- struct{}{}:
		default:
		}
		h.mu.Lock()
		h.rep.BrokerRestarts++
		if long {
			h.rep.LongOutages++
		}
		h.mu.Unlock()
	}
}

// startGrace is how long the writer or a node of an Object Store run runs
// before random kills may hit it.
const startGrace = 3 * time.Second

// randomKills SIGKILLs a random writer, pump or node process at random
// moments.
func (h *harness) randomKills(ctx context.Context, done <-chan struct{}) {
	victims := append([]*proc{h.writer, h.pump}, h.nodes...)
	for {
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case <-time.After(time.Duration(150+h.intn(300)) * time.Millisecond):
		}
		i := h.intn(len(victims))
		h.mu.Lock()
		protected := i >= 2 && h.protect[i-2] > 0 || i == 1 && h.protect[-1] > 0
		h.mu.Unlock()
		// With the Object Store the writer and every node open a broker
		// connection for the bucket before their first write or round;
		// killed every second or so during broker outages, they then
		// hardly ever get there. Random kills spare them in their first
		// moments (the failure-point kills still hit every step).
		if i != 1 && h.cfg.Artifacts == ArtifactsJetStream && victims[i].uptime() < startGrace {
			protected = true
		}
		if p := victims[i]; !protected && p.signal(syscall.SIGKILL) {
			h.mu.Lock()
			h.rep.RandomKills++
			h.mu.Unlock()
		}
	}
}

// converge waits until the producer's outbox is drained and every node's
// cursor is at the stream's last sequence, not halted.
func (h *harness) converge(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		ok, state := h.converged(ctx)
		if ok {
			return nil
		}
		last = state
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("no convergence within %v: %s", timeout, last)
}

func (h *harness) head(ctx context.Context) (uint64, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if h.fsrc != nil {
		return h.fsrc.Head(cctx)
	}
	st, err := h.js.Stream(cctx, natsfeed.DefaultStream)
	if err != nil {
		return 0, err
	}
	return st.CachedInfo().State.LastSeq, nil
}

func (h *harness) converged(ctx context.Context) (bool, string) {
	ps, err := node.ReadStatus(ctx, h.producer())
	if err != nil {
		return false, err.Error()
	}
	hd, err := h.head(ctx)
	if err != nil {
		return false, "stream head: " + err.Error()
	}
	state := fmt.Sprintf("outbox pending %d dead %d, head %d", ps.OutboxPending, ps.OutboxDead, hd)
	ok := ps.OutboxPending == 0
	for i, db := range h.nodeDBList() {
		st, err := node.ReadStatus(ctx, db)
		if err != nil {
			return false, err.Error()
		}
		state += fmt.Sprintf("; node%d cursor %d halted %v", i+1, st.Cursor, st.Halted != nil)
		if st.Halted != nil {
			state += " (" + st.Halted.Error + ")"
		}
		ok = ok && st.Cursor == hd && st.Halted == nil
	}
	return ok, state
}

// healthz returns node i's /healthz status code (0 if unreachable).
func (h *harness) healthz(i int) int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + h.nodeHTTP[i] + "/healthz")
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func sortedKeys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
