package chaos

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/controlfeed/controlfeed/feed/filesource"
)

// Report is the outcome of a run: what was injected, what was found.
type Report struct {
	Seed  uint64
	Nodes int
	// Events is the number of producer changes (outbox rows);
	// StreamMessages the stream's last sequence at the end.
	Events         int
	StreamMessages uint64
	// Kills counts kill -9 by failure point (from the failpoint log);
	// RandomKills the harness's SIGKILLs at random moments.
	Kills       map[string]int
	RandomKills int
	// Starts counts process starts by name; UnexpectedExits the exits that
	// were neither a kill nor a clean stop (for example a start while the
	// broker was down).
	Starts, UnexpectedExits map[string]int
	// BrokerRestarts counts broker kills + restarts; LongOutages those that
	// kept it down longer than the duplicate window.
	BrokerRestarts, LongOutages int
	// ForcedDuplicates counts the harness's re-publications that the broker
	// stored under a new sequence; each is delivered to every node.
	// PumpDuplicates counts other duplicate EventIDs in the stream (a pump
	// retry after the window, typically across a broker outage).
	ForcedDuplicates, PumpDuplicates int
	// BadInputs counts bad inputs tried by kind; Detected the node halts
	// they caused (one per node each), Skips and Repairs the resolutions.
	BadInputs, Detected map[string]int
	// Signed reports a signed run (Config.Signed): BadInputs and Detected
	// then count forged kinds.
	Signed         bool
	Skips, Repairs int
	// StreamRepairs counts the operator's stream repairs after a dropped
	// or swapped injection (hostile.go).
	StreamRepairs int
	// Conflicts is the sum over nodes of conflicting duplicates recorded.
	Conflicts int64
	// Stalls counts SIGSTOP..SIGCONT stalls (0.5–5 s) by role (broker,
	// node, pump); StallTime their total length.
	Stalls    map[string]int
	StallTime time.Duration
	// Cuts counts resets of the pump's broker connections (through the
	// proxy); CutsWithBacklog those while the outbox held at least 10
	// pending rows, when the pump publishes pipelined batches.
	Cuts, CutsWithBacklog int
	// DupNameEpisodes counts the second processes started with a node's
	// name; DupNameStandby the windows in which the duplicate reported the
	// name in use; DupNameVoid the windows in which the real node died at a
	// failure point (not judged); DupNameTakeovers the duplicates that took
	// the name over after the real node was killed (legitimate).
	DupNameEpisodes, DupNameStandby, DupNameVoid, DupNameTakeovers int
	// DupNameDeliveries counts the events a duplicate recorded in its own
	// database during a window in which the real node's process ran
	// throughout (a violation: the name was in use).
	DupNameDeliveries int
	// Wipes counts the "node wiped" faults (a stopped node's database
	// deleted); WipesRestored those after which the node bootstrapped from
	// a published snapshot (the others are problems).
	Wipes, WipesRestored int
	// PowerLosses counts the producer power losses simulated; RolledBack
	// the outbox rows they took away (committed, never published).
	PowerLosses, RolledBack int
	// WriterShort says how far the writer got when it did not write every
	// event before the fault phase's time limit ("" when it did); below
	// half the target it is a problem too.
	WriterShort string
	// Feed is the run's feed backend. FeedLocks counts the held feed
	// locks of a file-feed run, FeedLocksPastTimeout those held longer than
	// the readers' and the Sink's lock timeout, FeedLockTime their total.
	Feed, Artifacts                 string
	FeedLocks, FeedLocksPastTimeout int
	FeedLockTime                    time.Duration
	// StoreFulls counts the episodes with the artifact store at its size
	// limit; StoreFullFailures the writer runs that ended on a failed
	// upload during them.
	StoreFulls, StoreFullFailures int
	// StoreFullRetries counts the writer's failed Puts retried in-process
	// during those episodes (the Object Store run's writer retries).
	StoreFullRetries int
	// HealthyWhileStuck counts the periods in which a node made no progress
	// while the stream had events for it for longer than its stall
	// threshold plus grace and still answered /healthz 200 (a violation);
	// StuckReported those in which it answered with an error status.
	HealthyWhileStuck, StuckReported int
	// HaltsLogged counts the distinct halts the nodes logged;
	// HaltsWithoutBadInput those at an event that is no injected bad input
	// (a halt for a transient cause: a violation).
	HaltsLogged, HaltsWithoutBadInput int
	// Cluster holds the counts of a cluster run (Config.Brokers > 1), or
	// nil.
	Cluster *ClusterCounts
	// DiskFull describes the disk-full episode ("" if not run).
	DiskFull string
	// Lost, DoubleApplied, OutOfOrder, CursorOff and StateDiffs count
	// violations summed over nodes.
	Lost, DoubleApplied, OutOfOrder, CursorOff, StateDiffs int
	// Problems lists every violation found, in words.
	Problems []string
	// FaultPhase and Elapsed are the fault phase's and the whole run's
	// durations.
	FaultPhase, Elapsed time.Duration

	expected map[string][]byte // chaos/ keys every node must hold
}

func newReport(c Config) *Report {
	return &Report{Signed: c.Signed, Seed: c.Seed, Nodes: c.Nodes, Feed: c.Feed, Artifacts: c.Artifacts, Kills: map[string]int{}, Starts: map[string]int{}, UnexpectedExits: map[string]int{},
		BadInputs: map[string]int{}, Stalls: map[string]int{}, Detected: map[string]int{}, expected: map[string][]byte{}}
}

func (r *Report) problem(format string, args ...any) {
	if len(r.Problems) < 200 {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
}

func (r *Report) badTotal() int {
	n := 0
	for _, v := range r.BadInputs {
		n += v
	}
	return n
}

// OK reports whether the run found no violation.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// TotalKills is the number of kill -9, failure points plus random.
func (r *Report) TotalKills() int {
	n := r.RandomKills
	for _, v := range r.Kills {
		n += v
	}
	return n
}

// String prints the counts and the verdict line.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "chaos run: seed %d, %s feed, %s artifact store, %d nodes, fault phase %v, total %v\n", r.Seed, r.Feed, r.Artifacts, r.Nodes, r.FaultPhase.Round(time.Second), r.Elapsed.Round(time.Second))
	fmt.Fprintf(&b, "  events: %d producer changes, %d feed positions\n", r.Events, r.StreamMessages)
	if r.WriterShort != "" {
		fmt.Fprintf(&b, "  short run: %s (a loaded machine)\n", r.WriterShort)
	}
	if r.Feed == FeedFile {
		fmt.Fprintf(&b, "  feed locks held: %d (0.5-15s), %d past the %v lock timeout, %v in all; no broker, so no broker restarts, cuts, forced duplicates, bad inputs or duplicate node names\n",
			r.FeedLocks, r.FeedLocksPastTimeout, filesource.DefaultLockTimeout, r.FeedLockTime.Round(time.Second))
	}
	fmt.Fprintf(&b, "  kill -9: %d total = %d random +", r.TotalKills(), r.RandomKills)
	for _, k := range sortedKeys(r.Kills) {
		fmt.Fprintf(&b, " %s %d,", k, r.Kills[k])
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "  process starts:")
	for _, k := range sortedKeys(r.Starts) {
		fmt.Fprintf(&b, " %s %d", k, r.Starts[k])
	}
	if len(r.UnexpectedExits) > 0 {
		fmt.Fprintf(&b, "; exits with an error (restarted):")
		for _, k := range sortedKeys(r.UnexpectedExits) {
			fmt.Fprintf(&b, " %s %d", k, r.UnexpectedExits[k])
		}
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "  broker restarts: %d, of which %d outlasted the duplicate window\n", r.BrokerRestarts, r.LongOutages)
	fmt.Fprintf(&b, "  duplicates: %d forced into the stream (%d deliveries), %d more from pump retries past the window\n",
		r.ForcedDuplicates, r.ForcedDuplicates*r.Nodes, r.PumpDuplicates)
	if r.Signed {
		fmt.Fprintf(&b, "  signed: the pump signs, the nodes trust its key; the bad inputs are forged (the legitimate bad kinds run in the unsigned runs)\n")
		forged, all := 0, true
		var parts []string
		for _, k := range forgedKinds {
			forged += r.BadInputs[k]
			parts = append(parts, fmt.Sprintf("%s %d", k, r.BadInputs[k]))
			if r.Detected[k] != r.BadInputs[k]*r.Nodes {
				all = false
			}
		}
		fmt.Fprintf(&b, "  forged inputs: %d (%s), each detected on all nodes: %v (replays passed as duplicates, nothing applied; dropped and swapped producer events halted at with chain-gap, then applied after %d stream repairs; the others refused with their reason and passed with skip --security-override)\n",
			forged, strings.Join(parts, ", "), all, r.StreamRepairs)
	}
	fmt.Fprintf(&b, "  bad inputs: %d tried (", r.badTotal())
	for i, k := range sortedKeys(r.BadInputs) {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", k, r.BadInputs[k])
	}
	fmt.Fprintf(&b, "); node halts detected:")
	for _, k := range sortedKeys(r.Detected) {
		fmt.Fprintf(&b, " %s %d", k, r.Detected[k])
	}
	fmt.Fprintf(&b, "; %d skips, %d artifact repairs; %d conflicts recorded\n", r.Skips, r.Repairs, r.Conflicts)
	fmt.Fprintf(&b, "  stalls (SIGSTOP 0.5-5s): broker %d, node %d, pump %d, %v in all; pump connection cuts %d, %d with an outbox backlog >= %d\n",
		r.Stalls["broker"], r.Stalls["node"], r.Stalls["pump"], r.StallTime.Round(time.Second), r.Cuts, r.CutsWithBacklog, cutBacklog)
	fmt.Fprintf(&b, "  duplicate node name: %d episodes, %d stood by (name in use), %d windows void (node died at a failure point), %d took over after the node's kill\n",
		r.DupNameEpisodes, r.DupNameStandby, r.DupNameVoid, r.DupNameTakeovers)
	fmt.Fprintf(&b, "  node wiped: %d (database deleted while stopped), %d rejoined from a published snapshot\n", r.Wipes, r.WipesRestored)
	fmt.Fprintf(&b, "  producer power losses: %d (restored to the image after the pump's last fsync), %d committed outbox rows rolled back\n", r.PowerLosses, r.RolledBack)
	fmt.Fprintf(&b, "  artifact store full: %d episodes of %v, %d writer runs ended on a failed upload", r.StoreFulls, storeFullEpisode, r.StoreFullFailures)
	if r.Artifacts == ArtifactsJetStream {
		fmt.Fprintf(&b, ", %d failed Puts retried", r.StoreFullRetries)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "  health: %d stuck periods past the stall threshold (%v + grace %v) reported unhealthy, %d answered 200 (violations)\n",
		r.StuckReported, nodeStallThreshold, nodeUnavailGrace, r.HealthyWhileStuck)
	if r.Cluster != nil {
		b.WriteString(r.Cluster.String())
	}
	if r.DiskFull != "" {
		fmt.Fprintf(&b, "  disk full: %s\n", r.DiskFull)
	}
	fmt.Fprintf(&b, "  violations: lost %d, applied twice %d, out of order %d (applied or in the stream), cursor != head %d, state differences %d,\n"+
		"    duplicate-name deliveries %d (events a duplicate recorded while the node's own process ran throughout), halts without a bad input %d (of %d halts logged)\n",
		r.Lost, r.DoubleApplied, r.OutOfOrder, r.CursorOff, r.StateDiffs, r.DupNameDeliveries, r.HaltsWithoutBadInput, r.HaltsLogged)
	probs := append([]string(nil), r.Problems...)
	sort.Strings(probs)
	for i, p := range probs {
		if i == 20 {
			fmt.Fprintf(&b, "  ... %d more problems\n", len(probs)-20)
			break
		}
		fmt.Fprintf(&b, "  PROBLEM: %s\n", p)
	}
	if r.OK() {
		fmt.Fprintf(&b, "VERDICT: PASS: 0 lost, 0 applied twice, 0 out of order, 0 duplicate-name deliveries, 0 halts without a bad input, %d nodes identical to the producer, every injected fault detected", r.Nodes)
		if r.Cluster != nil {
			b.WriteString(", 0 client calls past their deadline, 0 false halts")
		}
		b.WriteString("\n")
	} else {
		fmt.Fprintf(&b, "VERDICT: FAIL: %d problems\n", len(r.Problems))
	}
	return b.String()
}
