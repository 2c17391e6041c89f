package chaos

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/natsobject"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/internal/failpoint"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/kv"
)

// The suite on a NATS cluster (Config.Brokers = 3): three "controlfeed
// nats-server" processes form one cluster with clustered JetStream; the
// feed stream and the artifact bucket are R3 (the pump runs with
// --nats-replicas 3, the writer creates the bucket with 3, the nodes are
// given every member's URL and create nothing). The faults are the ones a
// cluster adds: SIGKILL of the stream's leader and of the bucket's leader
// (found through the JetStream API: the stream's and the bucket stream
// OBJ_<bucket>'s cluster leader), SIGKILL of a member that leads neither,
// quorum losses (two of the three members SIGKILLed or SIGSTOPped for
// QuorumMin..QuorumMax) and single-member stalls; plus the stalls of the
// nodes and the pump, the duplicate node names and the failure-point kills
// of the writer, the pump and the nodes. Every member fault waits until the
// cluster is whole again (three members up, the stream and the bucket each
// with a leader and two current replicas), so that a kill never turns into
// a quorum loss nobody planned. No bad inputs are injected, so any halt is
// a false one.
//
// On top of the usual checker it holds two promises of the product: no
// client call blocks beyond its deadline (the writer's kv.Put calls, each
// under a deadline of clusterCallTimeout, and the harness's own "kv put"
// commands with --nats-timeout clusterCLITimeout, timed from outside), and
// no node reports "halted" for a transient cause (every node's /v1/status
// polled throughout).

// Child environment of a cluster run's writer: the bucket's replicas and
// the deadline of each kv.Put.
const (
	envReplicas    = "CHAOS_REPLICAS"
	envCallTimeout = "CHAOS_CALL_TIMEOUT"
)

const (
	// clusterCallTimeout is the deadline of each of the writer's kv.Put
	// calls (the default --nats-timeout).
	clusterCallTimeout = 5 * time.Second
	// callSlack is what a writer call may run past its deadline: the
	// clean-up of a failed upload and the scheduler of a loaded machine.
	callSlack = time.Second
	// clusterCLITimeout is the --nats-timeout of the harness's "kv put"
	// commands.
	clusterCLITimeout = 2 * time.Second
	// cliSlack is what a command may run past its deadline: starting the
	// process and opening the database on a loaded machine.
	cliSlack = 2 * time.Second
	// clusterRecover bounds how long the cluster may take to be whole
	// again after a member fault.
	clusterRecover = 90 * time.Second
)

// cliDeadline is the bound of one "kv put" of size bytes with
// --nats-timeout t, as the README states it: the connect, the bucket's
// look-up and the object's inspection are one request each, bounded by t;
// the upload gets t plus 1 s per MiB.
func cliDeadline(t time.Duration, size int) time.Duration {
	return 4*t + time.Duration(float64(size)/(1<<20)*float64(time.Second))
}

// ClusterConfig sizes the member faults of a cluster run (Config.Brokers =
// 3). Zero fields take the CI-sized defaults: 2 stream-leader kills, 2
// bucket-leader kills, 1 non-leader kill, 1 quorum loss of 5–20 s, 1
// member stall.
type ClusterConfig struct {
	// StreamLeaderKills, BucketLeaderKills and NonLeaderKills are the
	// SIGKILLs of the feed stream's leader, the bucket's leader and a
	// member that leads neither; each member is held down 0.3–2.3 s.
	StreamLeaderKills, BucketLeaderKills, NonLeaderKills int
	// QuorumLosses is the number of episodes in which two members are
	// away (SIGKILLed or SIGSTOPped) for QuorumMin..QuorumMax.
	QuorumLosses         int
	QuorumMin, QuorumMax time.Duration
	// MemberStalls is the number of SIGSTOP..SIGCONT stalls (0.5–5 s) of
	// one member.
	MemberStalls int
}

func (c *ClusterConfig) setDefaults() {
	if c.StreamLeaderKills == 0 {
		c.StreamLeaderKills = 2
	}
	if c.BucketLeaderKills == 0 {
		c.BucketLeaderKills = 2
	}
	if c.NonLeaderKills == 0 {
		c.NonLeaderKills = 1
	}
	if c.QuorumLosses == 0 {
		c.QuorumLosses = 1
	}
	if c.QuorumMin == 0 {
		c.QuorumMin = 5 * time.Second
	}
	if c.QuorumMax < c.QuorumMin {
		c.QuorumMax = max(20*time.Second, c.QuorumMin)
	}
	if c.MemberStalls == 0 {
		c.MemberStalls = 1
	}
}

// cluster is the harness's state of a cluster run.
type cluster struct {
	brokers []*proc
	urls    []string
}

// QuorumLoss is one episode without a JetStream majority.
type QuorumLoss struct {
	// Members are the two members taken away, each as "name:how" with how
	// "kill" (SIGKILL, held down) or "stop" (SIGSTOP..SIGCONT).
	Members []string
	// Length is how long they were away.
	Length time.Duration
	// Leader is the time from their return until the stream had a leader
	// again; Caught until every node's cursor was at the stream's head of
	// that moment (0: not within clusterRecover).
	Leader, Caught time.Duration
}

// ClusterCounts are the counts of a cluster run (Report.Cluster).
type ClusterCounts struct {
	Brokers int
	// StreamLeaderKills and BucketLeaderKills count SIGKILLs of the member
	// that led the feed stream, resp. the bucket's stream; SameLeader those
	// bucket-leader kills in which it led the stream too. NonLeaderKills
	// counts SIGKILLs of a member that led neither.
	StreamLeaderKills, BucketLeaderKills, SameLeader, NonLeaderKills int
	// MemberStalls counts SIGSTOP..SIGCONT stalls of one member.
	MemberStalls int
	// QuorumLosses lists the episodes without a majority.
	QuorumLosses []QuorumLoss
	// Recoveries sums the waits for the cluster to be whole again after a
	// member fault; LongestRecovery is the longest.
	Recoveries, LongestRecovery time.Duration
	// WriterCalls counts the writer's timed kv.Put calls seen in its log
	// (the longest of each process); LongestWriterCall is the longest.
	LongestWriterCall time.Duration
	// CLICalls counts the harness's "kv put" commands, CLIFailures those
	// that exited non-zero; LongestCLICall is the longest and
	// LongestCLIAllowed its deadline.
	CLICalls, CLIFailures             int
	LongestCLICall, LongestCLIAllowed time.Duration
	// CLIReuploads counts the uploads the kv put commands sent again
	// because one that reported success did not read back whole (nats.go's
	// chunk resend across a leader election; see artifact/natsobject's
	// readback.go), as their warnings say.
	CLIReuploads int
	// CallsPastDeadline counts the client calls that ran past their
	// deadline plus slack (violations).
	CallsPastDeadline int
	// StatusPolls counts the nodes' /v1/status answers read;
	// UnavailableSeen those that reported "unavailable"; FalseHalts the
	// distinct halts reported (violations: no bad input is injected).
	StatusPolls, UnavailableSeen, FalseHalts int
}

func (c *ClusterCounts) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "  cluster: %d brokers (controlfeed nats-server), R3 stream and R3 bucket\n", c.Brokers)
	fmt.Fprintf(&b, "  leader kills (SIGKILL): stream leader %d, bucket leader %d (%d of them led the stream too); non-leader kills %d; member stalls %d\n",
		c.StreamLeaderKills, c.BucketLeaderKills, c.SameLeader, c.NonLeaderKills, c.MemberStalls)
	fmt.Fprintf(&b, "  quorum losses: %d", len(c.QuorumLosses))
	for i, q := range c.QuorumLosses {
		sep := ","
		if i == 0 {
			sep = ":"
		}
		caught := "not within " + clusterRecover.String()
		if q.Caught > 0 {
			caught = q.Caught.Round(100 * time.Millisecond).String()
		}
		fmt.Fprintf(&b, "%s %v (%s; stream leader %v after, nodes at that head %s after)", sep, q.Length.Round(100*time.Millisecond),
			strings.Join(q.Members, " "), q.Leader.Round(100*time.Millisecond), caught)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "  cluster whole again after each member fault: longest wait %v, %v in all\n", c.LongestRecovery.Round(100*time.Millisecond), c.Recoveries.Round(time.Second))
	fmt.Fprintf(&b, "  longest client call: writer kv.Put %v (deadline %v + %v); kv put command %v (deadline %v + %v), %d commands, %d exited non-zero; %d past their deadline (violations)\n",
		c.LongestWriterCall.Round(time.Millisecond), clusterCallTimeout, callSlack, c.LongestCLICall.Round(time.Millisecond), c.LongestCLIAllowed.Round(time.Millisecond), cliSlack,
		c.CLICalls, c.CLIFailures, c.CallsPastDeadline)
	fmt.Fprintf(&b, "  uploads a kv put command sent again because one that reported success did not read back whole: %d\n", c.CLIReuploads)
	fmt.Fprintf(&b, "  false halts: %d (of %d status polls, %d reported unavailable)\n", c.FalseHalts, c.StatusPolls, c.UnavailableSeen)
	return b.String()
}

// brokerNames are the cluster members' server names.
func brokerName(i int) string { return fmt.Sprintf("cf%d", i+1) }

// writerReplicas is the bucket's replica count a cluster run's writer
// creates and expects (0, the backend's default, elsewhere).
func writerReplicas() int {
	n, _ := strconv.Atoi(os.Getenv(envReplicas))
	return n
}

// callLine starts the writer's log line for a kv.Put that took the longest
// so far in its process.
const callLine = "chaos: writer: longest kv.Put of this process"

var (
	longestMu  sync.Mutex
	longestPut time.Duration
)

// timedPut is kv.Put, under the deadline envCallTimeout names (if set);
// every call that is the longest so far of the process is logged with its
// wall time.
func timedPut(ctx context.Context, db *sql.DB, store artifact.Store, key string, val []byte) error {
	d, _ := time.ParseDuration(os.Getenv(envCallTimeout))
	if d <= 0 {
		_, err := kv.Put(ctx, db, store, key, val)
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	_, err := kv.Put(cctx, db, store, key, val)
	took := time.Since(start)
	longestMu.Lock()
	defer longestMu.Unlock()
	if took > longestPut {
		longestPut = took
		fmt.Fprintf(os.Stderr, "%s: took=%s deadline=%s err=%v\n", callLine, took, d, err)
	}
	return err
}

var callRe = regexp.MustCompile(regexp.QuoteMeta(callLine) + `: took=(\S+) deadline=(\S+)`)

// runCluster is Run with cfg.Brokers cluster members.
func runCluster(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Feed != FeedJetStream || cfg.Artifacts != ArtifactsJetStream {
		return nil, fmt.Errorf("chaos: run: Brokers %d: a cluster run uses the jetstream feed and artifact store, not %q and %q", cfg.Brokers, cfg.Feed, cfg.Artifacts)
	}
	if cfg.Brokers != 3 {
		return nil, fmt.Errorf("chaos: run: Brokers %d: want 1 or 3", cfg.Brokers)
	}
	cfg.Cluster.setDefaults()
	h := &harness{cl: &cluster{}, cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 1)), calm: make(chan struct{}),
		nodeFP: map[int]string{}, injected: map[string]injection{}, published: map[string]uint64{}, forced: map[uint64]bool{},
		protect: map[int]int{}, stopped: map[int]bool{}, quiet: map[int]bool{}, restarted: make(chan struct{}, 1)}
	h.rep = newReport(cfg)
	h.rep.Cluster = &ClusterCounts{Brokers: cfg.Brokers}
	h.logf = func(format string, args ...any) {
		fmt.Fprintf(cfg.Log, "chaos %s: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
	start := time.Now()
	if err := h.setupCluster(ctx); err != nil {
		h.teardown()
		return nil, err
	}
	defer h.teardown()
	h.logf("seed %d; cluster of %d brokers, %d events over %v, %d nodes, dup window %v; dir %s", cfg.Seed, cfg.Brokers, cfg.Events, cfg.Duration, cfg.Nodes, cfg.DupWindow, cfg.Dir)

	bctx, bcancel := context.WithCancel(ctx) // the brokers outlive the others: check reads the stream
	var sup, bsup sync.WaitGroup
	for _, b := range h.cl.brokers {
		bsup.Go(func() { b.supervise(bctx, 20*time.Millisecond) })
	}
	defer func() { bcancel(); bsup.Wait() }()
	if err := h.connectCluster(ctx); err != nil {
		return nil, err
	}
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	for _, p := range append([]*proc{h.writer, h.pump}, h.nodes...) {
		sup.Go(func() { p.supervise(pctx, 20*time.Millisecond) })
	}

	fctx, fcancel := context.WithTimeout(ctx, cfg.Duration+max(cfg.Duration/2, 2*time.Minute))
	var inj sync.WaitGroup
	faultsDone := make(chan struct{})
	membersDone := make(chan struct{})
	inj.Go(func() { h.memberFaults(fctx, faultsDone); close(membersDone) })
	inj.Go(func() { h.stalls(fctx, faultsDone, "node", cfg.Stalls) })
	inj.Go(func() { h.stalls(fctx, faultsDone, "pump", cfg.Stalls/2) })
	inj.Go(func() { h.dupNames(fctx, faultsDone) })
	inj.Go(func() { h.healthWatch(fctx, faultsDone) })
	inj.Go(func() { h.statusWatch(fctx, faultsDone) })
	inj.Go(func() { h.cliPuts(fctx, faultsDone) })
	tick := time.NewTicker(5 * time.Second)
	for {
		<-tick.C
		h.progress()
		select {
		case <-membersDone:
			if h.writer.finished() && time.Since(start) >= cfg.Duration {
				goto over
			}
		default:
		}
		if fctx.Err() != nil {
			break
		}
	}
over:
	tick.Stop()
	close(faultsDone)
	inj.Wait()
	fcancel()
	h.rep.FaultPhase = time.Since(start)

	h.logf("fault phase over after %v; converging without faults", h.rep.FaultPhase.Round(time.Second))
	close(h.calm)
	for _, b := range h.cl.brokers {
		b.hold(false)
		b.signal(syscall.SIGCONT)
	}
	for _, p := range append([]*proc{h.pump}, h.nodes...) {
		p.killAndWait()
	}
	if !h.writer.finished() {
		h.writer.hold(true)
		h.writer.killAndWait()
		n, _ := outboxCount(ctx, h.producer())
		h.rep.WriterShort = fmt.Sprintf("the writer wrote %d of %d events before the fault phase's time limit", n, cfg.Events)
		if n < cfg.Events/2 {
			h.rep.problem("writer did not reach %d events during the fault phase: %s", cfg.Events, h.rep.WriterShort)
		}
	}
	if err := h.converge(ctx, 3*time.Minute); err != nil {
		h.rep.problem("%v", err)
	}
	pcancel()
	sup.Wait()
	for _, p := range append([]*proc{h.writer, h.pump}, h.nodes...) {
		starts, bad, last := p.stats()
		h.rep.Starts[p.name] = starts
		if bad > 0 {
			h.rep.UnexpectedExits[p.name] = bad
			h.logf("%s: %d unexpected exits, last: %s", p.name, bad, last)
		}
	}
	h.rep.Kills = readKillLog(h.fpLog)
	h.writerCalls()
	if err := h.check(ctx); err != nil {
		h.rep.problem("check: %v", err)
	}
	bcancel()
	bsup.Wait()
	for _, b := range h.cl.brokers {
		h.rep.Starts[b.name], _, _ = b.stats()
	}
	h.rep.Elapsed = time.Since(start)
	return h.rep, nil
}

// setupCluster prepares the directories, databases and processes of a
// cluster run.
func (h *harness) setupCluster(ctx context.Context) error {
	c := h.cfg
	h.dir = c.Dir
	h.fpLog = filepath.Join(h.dir, "failpoints.log")
	h.producerDB = filepath.Join(h.dir, "producer.db")
	var urls, routes, clusterAddrs []string
	for range c.Brokers {
		a, err := freeAddr()
		if err != nil {
			return fmt.Errorf("chaos: setup: %w", err)
		}
		r, err := freeAddr()
		if err != nil {
			return fmt.Errorf("chaos: setup: %w", err)
		}
		urls, clusterAddrs, routes = append(urls, "nats://"+a), append(clusterAddrs, r), append(routes, "nats-route://"+r)
	}
	h.cl.urls = urls
	h.natsURL = strings.Join(urls, ",")
	var err error
	if h.pdb, err = node.OpenDB(ctx, h.producerDB); err != nil {
		return err
	}
	for i := range c.Nodes {
		p := filepath.Join(h.dir, fmt.Sprintf("node%d.db", i+1))
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
	logf := func(name string) string { return filepath.Join(h.dir, name+".log") }
	for i := range c.Brokers {
		name := brokerName(i)
		store := filepath.Join(h.dir, name)
		if err := os.MkdirAll(store, 0o755); err != nil {
			return fmt.Errorf("chaos: setup: %w", err)
		}
		h.cl.brokers = append(h.cl.brokers, &proc{name: name, logf: logf(name),
			argv: []string{c.Binary, "nats-server", "--listen", strings.TrimPrefix(urls[i], "nats://"), "--store", store,
				"--server-name", name, "--cluster-name", "chaos", "--cluster-listen", clusterAddrs[i], "--routes", strings.Join(routes, ",")},
			env: func() []string { return []string{"PATH=" + os.Getenv("PATH")} }})
	}
	replicas := strconv.Itoa(c.Brokers)
	// Three times the average rate: a quorum loss or an election holds
	// the writer for seconds, and it must catch up afterwards.
	rate := int(float64(c.Events) / c.Duration.Seconds() * 3)
	h.writer = &proc{name: "writer", logf: logf("writer"), once: true,
		argv: append(append([]string{}, c.Self...), h.producerDB, h.natsURL, strconv.Itoa(c.Events), strconv.FormatUint(c.Seed, 10), strconv.Itoa(max(rate, 1))),
		env: func() []string {
			return append(append([]string{ChildEnv + "=writer", envReplicas + "=" + replicas, envCallTimeout + "=" + clusterCallTimeout.String()}, base...),
				failpoint.EnvSpec+"="+h.spec(writerPoints, ""))
		}}
	common := []string{"--artifact-store", "jetstream", "--nats-url", h.natsURL, "--nats-duplicate-window", c.DupWindow.String(),
		"--poll-interval", "20ms", "--log-level", "info"}
	h.pump = &proc{name: "pump", logf: logf("pump"),
		argv: append([]string{c.Binary, "serve", "--db", h.producerDB, "--feed-sink", natsfeed.Name, "--nats-replicas", replicas}, common...),
		env:  func() []string { return append(base, failpoint.EnvSpec+"="+h.spec(pumpPoints, "")) }}
	for i := range c.Nodes {
		name := fmt.Sprintf("node%d", i+1)
		h.nodes = append(h.nodes, &proc{name: name, logf: logf(name),
			argv: append([]string{c.Binary, "serve", "--db", h.nodeDBs[i], "--node-name", name, "--feed-source", natsfeed.Name,
				"--listen", h.nodeHTTP[i], "--stall-threshold", nodeStallThreshold.String(), "--unavailable-grace", nodeUnavailGrace.String()}, common...),
			env: func() []string {
				h.mu.Lock()
				quiet := h.quiet[i]
				h.mu.Unlock()
				if quiet {
					return base
				}
				return append(base, failpoint.EnvSpec+"="+h.spec(nodePoints, ""))
			}})
	}
	return nil
}

// connectCluster waits for the cluster to serve JetStream, then creates
// the R3 stream and the R3 bucket, as the producer would (the writer and
// the pump then find them with the replicas they expect).
func (h *harness) connectCluster(ctx context.Context) error {
	var err error
	h.nc, err = nats.Connect(h.natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.RetryOnFailedConnect(true), nats.Timeout(2*time.Second))
	if err != nil {
		return fmt.Errorf("chaos: connect to the cluster %s: %w", h.natsURL, err)
	}
	if h.js, err = jetstream.New(h.nc, jetstream.WithDefaultTimeout(3*time.Second)); err != nil {
		return fmt.Errorf("chaos: jetstream: %w", err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var sink *natsfeed.Sink
		sink, err = natsfeed.NewSink(cctx, feed.NATSConfig{URLs: h.cl.urls, DuplicateWindow: h.cfg.DupWindow, Replicas: h.cfg.Brokers}, &natsfeed.Options{Conn: h.nc})
		if err == nil {
			sink.Close()
			h.obj, err = natsobject.New(cctx, artifact.NATSConfig{URLs: h.cl.urls, Create: true, Replicas: h.cfg.Brokers}, &natsobject.Options{Conn: h.nc})
		}
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("chaos: create the R%d stream and bucket on the cluster %s: %w", h.cfg.Brokers, h.natsURL, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if w, err := h.whole(ctx); !w {
		return fmt.Errorf("chaos: the cluster %s is not whole after creating the stream and bucket: %v", h.natsURL, err)
	}
	h.logf("cluster %s serves the R%d stream and bucket", h.natsURL, h.cfg.Brokers)
	return nil
}

// leaders returns the server names of the feed stream's and the bucket
// stream's leaders.
func (h *harness) leaders(ctx context.Context) (stream, bucket string, err error) {
	for i, name := range []string{natsfeed.DefaultStream, "OBJ_" + natsobject.DefaultBucket} {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		var info *jetstream.StreamInfo
		st, err := h.js.Stream(cctx, name)
		if err == nil {
			info, err = st.Info(cctx)
		}
		cancel()
		if err != nil {
			return "", "", fmt.Errorf("stream %s info: %w", name, err)
		}
		if info.Cluster == nil || info.Cluster.Leader == "" {
			return "", "", fmt.Errorf("stream %s has no leader", name)
		}
		if i == 0 {
			stream = info.Cluster.Leader
		} else {
			bucket = info.Cluster.Leader
		}
	}
	return stream, bucket, nil
}

// whole reports whether every member runs and the stream and the bucket
// each have a leader and every other member as a current replica.
func (h *harness) whole(ctx context.Context) (bool, error) {
	for _, b := range h.cl.brokers {
		if !b.running() {
			return false, fmt.Errorf("%s is down", b.name)
		}
	}
	for _, name := range []string{natsfeed.DefaultStream, "OBJ_" + natsobject.DefaultBucket} {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		var info *jetstream.StreamInfo
		st, err := h.js.Stream(cctx, name)
		if err == nil {
			info, err = st.Info(cctx)
		}
		cancel()
		if err != nil {
			return false, fmt.Errorf("stream %s info: %w", name, err)
		}
		if info.Cluster == nil || info.Cluster.Leader == "" {
			return false, fmt.Errorf("stream %s has no leader", name)
		}
		n := 0
		for _, r := range info.Cluster.Replicas {
			if r.Current && !r.Offline {
				n++
			}
		}
		if n != h.cfg.Brokers-1 {
			return false, fmt.Errorf("stream %s: %d of %d replicas current", name, n, h.cfg.Brokers-1)
		}
	}
	return true, nil
}

// waitWhole waits until the cluster is whole again and counts the wait.
func (h *harness) waitWhole(ctx context.Context, what string) {
	t0 := time.Now()
	var last error
	ok := waitFor(ctx, clusterRecover, func() bool {
		w, err := h.whole(ctx)
		last = err
		return w
	})
	d := time.Since(t0)
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.rep.Cluster
	c.Recoveries += d
	c.LongestRecovery = max(c.LongestRecovery, d)
	if !ok && ctx.Err() == nil {
		h.rep.problem("cluster not whole within %v after %s: %v", clusterRecover, what, last)
	}
}

// memberIndex returns the index of the member named name, or -1.
func (h *harness) memberIndex(name string) int {
	for i := range h.cl.brokers {
		if brokerName(i) == name {
			return i
		}
	}
	return -1
}

// killMember SIGKILLs member i, holds it down for down and starts it again.
func (h *harness) killMember(ctx context.Context, i int, down time.Duration) bool {
	b := h.cl.brokers[i]
	b.hold(true)
	if !b.signal(syscall.SIGKILL) {
		b.hold(false)
		return false
	}
	for b.running() {
		time.Sleep(5 * time.Millisecond)
	}
	sleepCtx(ctx, down)
	b.hold(false)
	return true
}

// Member faults of a cluster run.
const (
	faultStreamLeader = "stream-leader"
	faultBucketLeader = "bucket-leader"
	faultNonLeader    = "non-leader"
	faultQuorum       = "quorum-loss"
	faultMemberStall  = "member-stall"
)

// memberFaults runs the cluster's member faults in a random order, one at
// a time (each under brokerMu, which the duplicate-name windows hold too),
// each followed by a wait until the cluster is whole again and a short
// pause.
func (h *harness) memberFaults(ctx context.Context, done <-chan struct{}) {
	c := h.cfg
	var plan []string
	for _, f := range []struct {
		kind string
		n    int
	}{{faultStreamLeader, c.Cluster.StreamLeaderKills}, {faultBucketLeader, c.Cluster.BucketLeaderKills}, {faultNonLeader, c.Cluster.NonLeaderKills},
		{faultQuorum, c.Cluster.QuorumLosses}, {faultMemberStall, c.Cluster.MemberStalls}} {
		for range f.n {
			plan = append(plan, f.kind)
		}
	}
	for i := len(plan) - 1; i > 0; i-- {
		j := h.intn(i + 1)
		plan[i], plan[j] = plan[j], plan[i]
	}
	// Spread the faults over the fault phase: a member fault and the
	// cluster's recovery take about 6 s, a quorum loss its length and 10 s
	// more; the pauses get what is left.
	busy := time.Duration(len(plan)-c.Cluster.QuorumLosses)*6*time.Second + time.Duration(c.Cluster.QuorumLosses)*(c.Cluster.QuorumMax+10*time.Second)
	pause := max((c.Duration-busy)/time.Duration(len(plan)+1), time.Second)
	for e, kind := range plan {
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case <-time.After(pause/2 + time.Duration(h.intn(int(pause)))):
		}
		h.brokerMu.Lock()
		h.memberFault(ctx, e+1, kind)
		h.waitWhole(ctx, kind)
		h.brokerMu.Unlock()
	}
}

func (h *harness) memberFault(ctx context.Context, e int, kind string) {
	sl, bl, err := h.leaders(ctx)
	if err != nil && kind != faultMemberStall {
		h.logf("member fault %d (%s): no leaders known (%v); skipped", e, kind, err)
		return
	}
	down := time.Duration(300+h.intn(2000)) * time.Millisecond
	cc := h.rep.Cluster
	switch kind {
	case faultStreamLeader, faultBucketLeader:
		name := sl
		if kind == faultBucketLeader {
			name = bl
		}
		i := h.memberIndex(name)
		if i < 0 || !h.killMember(ctx, i, down) {
			h.logf("member fault %d (%s): leader %q not running; skipped", e, kind, name)
			return
		}
		h.mu.Lock()
		if kind == faultStreamLeader {
			cc.StreamLeaderKills++
		} else {
			cc.BucketLeaderKills++
			if bl == sl {
				cc.SameLeader++
			}
		}
		h.mu.Unlock()
		h.logf("member fault %d: SIGKILL of %s, the %s leader (stream leader %s, bucket leader %s), down %v", e, name, strings.TrimSuffix(kind, "-leader"), sl, bl, down.Round(time.Millisecond))
	case faultNonLeader:
		var cands []int
		for i := range h.cl.brokers {
			if n := brokerName(i); n != sl && n != bl {
				cands = append(cands, i)
			}
		}
		if len(cands) == 0 {
			h.logf("member fault %d (%s): one member leads both; skipped", e, kind)
			return
		}
		i := cands[h.intn(len(cands))]
		if !h.killMember(ctx, i, down) {
			return
		}
		h.mu.Lock()
		cc.NonLeaderKills++
		h.mu.Unlock()
		h.logf("member fault %d: SIGKILL of %s, a follower (stream leader %s, bucket leader %s), down %v", e, brokerName(i), sl, bl, down.Round(time.Millisecond))
	case faultMemberStall:
		i := h.intn(len(h.cl.brokers))
		d := stallMin + time.Duration(h.intn(int(stallMax-stallMin)))
		if !h.cl.brokers[i].signal(syscall.SIGSTOP) {
			return
		}
		time.Sleep(d) // not cut short: the SIGCONT must follow
		h.cl.brokers[i].signal(syscall.SIGCONT)
		h.mu.Lock()
		cc.MemberStalls++
		h.rep.Stalls["broker"]++
		h.rep.StallTime += d
		h.mu.Unlock()
		h.logf("member fault %d: %s stalled for %v", e, brokerName(i), d.Round(time.Millisecond))
	case faultQuorum:
		h.quorumLoss(ctx, e)
	}
}

// quorumLoss takes two members away (each SIGKILLed and held down, or
// SIGSTOPped) for QuorumMin..QuorumMax, brings them back and measures the
// recovery.
func (h *harness) quorumLoss(ctx context.Context, e int) {
	c := h.cfg
	keep := h.intn(len(h.cl.brokers))
	d := c.Cluster.QuorumMin + time.Duration(h.intn(int(c.Cluster.QuorumMax-c.Cluster.QuorumMin)+1))
	var q QuorumLoss
	var stopped, killed []int
	for i, b := range h.cl.brokers {
		if i == keep {
			continue
		}
		if h.intn(2) == 0 {
			if b.signal(syscall.SIGSTOP) {
				stopped = append(stopped, i)
				q.Members = append(q.Members, brokerName(i)+":stop")
			}
			continue
		}
		b.hold(true)
		if b.signal(syscall.SIGKILL) {
			killed = append(killed, i)
			q.Members = append(q.Members, brokerName(i)+":kill")
		} else {
			b.hold(false)
		}
	}
	t0 := time.Now()
	h.logf("member fault %d: quorum loss for %v: %s away, %s kept", e, d, strings.Join(q.Members, " "), brokerName(keep))
	time.Sleep(d) // not cut short: the members must come back
	for _, i := range stopped {
		h.cl.brokers[i].signal(syscall.SIGCONT)
	}
	for _, i := range killed {
		h.cl.brokers[i].hold(false)
	}
	back := time.Now()
	q.Length = back.Sub(t0)
	waitFor(ctx, clusterRecover, func() bool {
		sl, _, err := h.leaders(ctx)
		return err == nil && sl != ""
	})
	q.Leader = time.Since(back)
	var hd uint64
	waitFor(ctx, clusterRecover, func() bool {
		var err error
		hd, err = h.head(ctx)
		return err == nil
	})
	if waitFor(ctx, clusterRecover, func() bool {
		for _, db := range h.nodeDBList() {
			st, err := node.ReadStatus(ctx, db)
			if err != nil || st.Cursor < hd {
				return false
			}
		}
		return true
	}) {
		q.Caught = time.Since(back)
	}
	h.mu.Lock()
	h.rep.Cluster.QuorumLosses = append(h.rep.Cluster.QuorumLosses, q)
	h.mu.Unlock()
	h.logf("member fault %d: quorum back after %v; stream leader after %v, nodes at the head after %v", e, q.Length.Round(time.Millisecond),
		q.Leader.Round(time.Millisecond), q.Caught.Round(time.Millisecond))
}

// statusWatch polls every node's /v1/status during the fault phase: a
// node that reports "halted" is a false halt (no bad input is injected),
// counted once per event.
func (h *harness) statusWatch(ctx context.Context, done <-chan struct{}) {
	seen := map[string]bool{}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case <-tick.C:
		}
		for i := range h.nodes {
			st, err := statusOf(h.nodeHTTP[i])
			if err != nil {
				continue
			}
			h.mu.Lock()
			cc := h.rep.Cluster
			cc.StatusPolls++
			if st.Unavailable != nil {
				cc.UnavailableSeen++
			}
			if st.State == "halted" || st.Halted != nil {
				key := fmt.Sprintf("node%d", i+1)
				if st.Halted != nil {
					key += fmt.Sprintf(" %s@%d", st.Halted.EventID, st.Halted.ControlVersion)
				}
				if !seen[key] {
					seen[key] = true
					cc.FalseHalts++
					msg := ""
					if st.Halted != nil {
						msg = st.Halted.Error
					}
					h.rep.problem("%s reported halted with no bad input injected (a false halt): %s", key, msg)
				}
			}
			h.mu.Unlock()
		}
	}
}

// reuploadLine is in the warning of a Put that uploads again content whose
// upload did not read back whole.
const reuploadLine = natsobject.MsgReupload

// cliPuts runs "controlfeed kv put" on the producer's database every
// second or two, with --nats-timeout clusterCLITimeout, and times each
// command: a command past cliDeadline plus cliSlack is a violation. One
// value in eight is 0.5–2 MiB, so that uploads span leader changes.
func (h *harness) cliPuts(ctx context.Context, done <-chan struct{}) {
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case <-time.After(time.Duration(1000+h.intn(1000)) * time.Millisecond):
		}
		size := 1 + h.intn(2000)
		if h.intn(8) == 0 {
			size = 1<<19 + h.intn(3<<19)
		}
		val := make([]byte, size)
		for i := range val {
			val[i] = 'a' + byte(h.intn(26))
		}
		allowed := cliDeadline(clusterCLITimeout, size)
		cctx, cancel := context.WithTimeout(ctx, allowed+time.Minute) // only against a hang: the check is below
		cmd := exec.CommandContext(cctx, h.cfg.Binary, "kv", "put", "--db", h.producerDB, "--artifact-store", "jetstream",
			"--nats-url", h.natsURL, "--nats-replicas", strconv.Itoa(h.cfg.Brokers), "--nats-timeout", clusterCLITimeout.String(),
			"--log-level", "warn", fmt.Sprintf("cli/%03d", n%100), "-")
		cmd.Stdin = strings.NewReader(string(val))
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		t0 := time.Now()
		out, err := cmd.CombinedOutput()
		took := time.Since(t0)
		cancel()
		h.mu.Lock()
		cc := h.rep.Cluster
		cc.CLICalls++
		if err != nil {
			cc.CLIFailures++
		}
		cc.CLIReuploads += strings.Count(string(out), reuploadLine)
		if took > cc.LongestCLICall {
			cc.LongestCLICall, cc.LongestCLIAllowed = took, allowed
		}
		if took > allowed+cliSlack {
			cc.CallsPastDeadline++
			h.rep.problem("kv put of %d bytes took %v, past its deadline %v + %v: %v: %.400s", size, took.Round(time.Millisecond), allowed, cliSlack, err, out)
		}
		h.mu.Unlock()
		if err != nil {
			h.logf("kv put %d (%d bytes) exited non-zero after %v: %v: %.300s", n, size, took.Round(time.Millisecond), err, strings.TrimSpace(string(out)))
		}
	}
}

// writerCalls reads the writer's log for its longest kv.Put calls: one
// past its deadline plus callSlack is a violation.
func (h *harness) writerCalls() {
	b, err := os.ReadFile(h.writer.logf)
	if err != nil {
		h.rep.problem("read the writer's log for its call times: %v", err)
		return
	}
	cc := h.rep.Cluster
	for _, m := range callRe.FindAllStringSubmatch(string(b), -1) {
		took, err1 := time.ParseDuration(m[1])
		dl, err2 := time.ParseDuration(m[2])
		if err1 != nil || err2 != nil {
			continue
		}
		cc.LongestWriterCall = max(cc.LongestWriterCall, took)
		if took > dl+callSlack {
			cc.CallsPastDeadline++
			h.rep.problem("writer: a kv.Put took %v, past its deadline %v + %v", took, dl, callSlack)
		}
	}
}

// ScaledClusterConfig returns the member faults of a long cluster run of
// duration d: per minute, a stream-leader kill, a bucket-leader kill, a
// non-leader kill and a member stall; a quorum loss of 5–20 s every two
// minutes (at least one of each).
func ScaledClusterConfig(d time.Duration) ClusterConfig {
	m := d.Minutes()
	return ClusterConfig{StreamLeaderKills: max(int(m), 1), BucketLeaderKills: max(int(m), 1), NonLeaderKills: max(int(m), 1),
		QuorumLosses: max(int(m/2), 1), QuorumMin: 5 * time.Second, QuorumMax: 20 * time.Second, MemberStalls: max(int(m), 1)}
}
