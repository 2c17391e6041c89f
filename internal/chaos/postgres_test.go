package chaos_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/controlfeed/controlfeed/internal/chaos"
	"github.com/controlfeed/controlfeed/internal/pgtest"
)

// TestChaos_Postgres runs the PostgreSQL mode (see RunPostgres): two
// producer serve processes on one PostgreSQL database competing for the
// pump, SIGKILLs of the holder, pg_terminate_backend of its lock session,
// a PostgreSQL restart, node kills; then 0 lost, 0 applied twice, 0 out of
// order, identical states. CI-sized: 20 s of faults, 2,000 events. The
// report goes to CONTROLFEED_CHAOS_POSTGRES_REPORT if set.
func TestChaos_Postgres(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos suite with OS processes; skipped with -short")
	}
	u, err := url.Parse(pgtest.NewSchema(t))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Del("application_name") // serve names its sessions after its process
	u.RawQuery = q.Encode()
	restart := pgtest.Restarter(t)
	bin, _ := buildBinaries(t)
	cfg := chaos.PostgresConfig{Binary: bin, Dir: t.TempDir(), URL: u.String(), RestartPostgres: restart, Log: testWriter{t}}
	if d := runConfig(t).Duration; d > 0 { // long mode: scaled like the others
		scale := float64(d) / float64(20e9)
		cfg.Duration, cfg.Events = d, int(2000*scale)
		cfg.HolderKills, cfg.Terminations, cfg.Restarts, cfg.NodeKills = int(4*scale), int(4*scale), max(int(scale), 1), int(3*scale)
	}
	rep, err := chaos.RunPostgres(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", rep)
	if path := os.Getenv("CONTROLFEED_CHAOS_POSTGRES_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(rep.String()), 0o644); err != nil {
			t.Errorf("write the report to %s: %v", path, err)
		}
	}
	if !rep.OK() {
		for _, p := range []string{"pump-a", "pump-b", "node1", "node2"} {
			b, _ := os.ReadFile(filepath.Join(cfg.Dir, p+".log"))
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("--- %s log (tail) ---\n%s", p, b)
		}
		t.Fatalf("chaos run failed: %d problems (seed %d)", len(rep.Problems), rep.Seed)
	}
}
