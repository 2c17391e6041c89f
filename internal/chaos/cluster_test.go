package chaos_test

import (
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/internal/chaos"
)

// TestChaos_Cluster runs the suite on a 3-server NATS cluster of
// "controlfeed nats-server" processes, R3 stream and R3 bucket: SIGKILLs
// of the stream's leader (twice), of the bucket's leader and of a
// follower, a quorum loss of 5–10 s, member, node and pump stalls, a
// duplicate node name and the failure-point kills; the usual checker, plus no client call past its
// deadline and no false halt. CI-sized: 45 s of faults and 500 events (each
// write is an R3 upload plus an R3 publish); in long mode (see runConfig)
// the member faults scale with the duration, with quorum losses of 5–20 s.
func TestChaos_Cluster(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos suite with OS processes; skipped with -short")
	}
	cfg := runConfig(t)
	if cfg.Duration == 0 {
		cfg = chaos.Config{Duration: 45 * time.Second, Events: 500, KillsPerPoint: 3, Stalls: 4, DupNames: 1, Seed: cfg.Seed,
			Cluster: chaos.ClusterConfig{StreamLeaderKills: 2, BucketLeaderKills: 1, NonLeaderKills: 1, QuorumLosses: 1,
				QuorumMin: 5 * time.Second, QuorumMax: 10 * time.Second, MemberStalls: 1}}
	} else {
		cfg.Cluster = chaos.ScaledClusterConfig(cfg.Duration)
	}
	cfg.Brokers, cfg.Artifacts, cfg.DiskFull = 3, chaos.ArtifactsJetStream, false
	runChaos(t, cfg, "CONTROLFEED_CHAOS_CLUSTER_REPORT")
}
