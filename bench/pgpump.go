package bench

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"

	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/outbox"
)

// pingPostgres checks that the server at url answers, within 10 s.
func pingPostgres(ctx context.Context, url string) error {
	db, err := sql.Open("pgx", url)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

// runPgPump measures the outbox pump on PostgreSQL (Config.PostgresURL):
// pgpump/sync and pgpump/batch against raw publishes that write each
// publish (or window) back with one UPDATE, on the same embedded NATS
// server and the same PostgreSQL, and pgpump/takeover, the time from
// terminating the drainer lock holder's session to a standby publishing.
func runPgPump(ctx context.Context, e *env) ([]Result, error) {
	if e.cfg.PostgresURL == "" {
		e.log.Info("bench: pgpump skipped: no PostgreSQL URL (controlfeed bench --postgres-url)")
		return nil, nil
	}
	admin, err := sql.Open("pgx", e.cfg.PostgresURL)
	if err != nil {
		return nil, fmt.Errorf("open PostgreSQL: %w", err)
	}
	defer admin.Close()
	var schemas []string
	defer func() {
		for _, s := range schemas {
			if _, err := admin.ExecContext(context.WithoutCancel(ctx), "DROP SCHEMA "+s+" CASCADE"); err != nil {
				e.log.Warn("bench: drop schema", "schema", s, "err", err)
			}
		}
	}()
	// newOutbox creates a schema with a migrated, empty outbox and opens
	// a pool on it.
	newOutbox := func() (*sql.DB, string, error) {
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, "", err
		}
		schema := "controlfeed_bench_" + hex.EncodeToString(b[:])
		if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
			return nil, "", fmt.Errorf("create schema %s: %w", schema, err)
		}
		schemas = append(schemas, schema)
		u, err := url.Parse(e.cfg.PostgresURL)
		if err != nil {
			return nil, "", fmt.Errorf("PostgreSQL URL: %w", err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		db, err := sql.Open("pgx", u.String())
		if err != nil {
			return nil, "", err
		}
		if err := outbox.Migrate(ctx, db); err != nil {
			db.Close()
			return nil, "", err
		}
		return db, u.String(), nil
	}

	srv, err := startServer(e.dir)
	if err != nil {
		return nil, err
	}
	defer srv.close()
	p, err := newPool(ctx, e.dir+"/artifacts")
	if err != nil {
		return nil, err
	}
	var out []Result
	for _, m := range []struct {
		name     string
		n        int
		window   int
		minRatio float64
		note     string
	}{
		{"pgpump/sync", e.cfg.PumpSyncEvents, 1, 0.8, "Sink.Append + write-back vs js.Publish(MsgID) + one UPDATE per event"},
		{"pgpump/batch", e.cfg.PumpBatchEvents, natsfeed.DefaultMaxBatchWindow, 0.5,
			fmt.Sprintf("AppendBatch + write-back vs PublishAsync x%d + one UPDATE per window", natsfeed.DefaultMaxBatchWindow)},
	} {
		// Pump and raw passes alternate, pgRounds of each on fresh
		// schemas, and the medians are compared: one pass of each, run
		// back to back, moved with whatever else the server and the
		// machine did at that moment (autovacuum, a checkpoint, another
		// process), which made single ratios swing by half.
		var pumpRates, rawRates []float64
		for round := range pgRounds {
			tag := fmt.Sprintf("PG%dR%d", m.window, round)
			pumpRate, err := pgPumpPass(ctx, srv, p, newOutbox, "PUMP"+tag, m.n, m.window > 1)
			if err != nil {
				return out, err
			}
			rawRate, err := pgRawPass(ctx, srv, p, newOutbox, "RAW"+tag, m.n, m.window)
			if err != nil {
				return out, err
			}
			pumpRates, rawRates = append(pumpRates, pumpRate), append(rawRates, rawRate)
		}
		pumpRate, rawRate := median(pumpRates), median(rawRates)
		m.note += fmt.Sprintf("; medians of %d alternating passes each (pump %s, raw %s events/s)", pgRounds, formatRates(pumpRates), formatRates(rawRates))
		out = append(out, ratioResult(m.name, "events/s", pumpRate, rawRate, m.minRatio, fmt.Sprintf("%d rows; %s", m.n, m.note)))
	}

	r, err := pgTakeover(ctx, e, srv, newOutbox)
	if err != nil {
		return out, err
	}
	return append(out, r), nil
}

// pgRounds is the number of pump passes and raw passes each pgpump ratio
// compares the medians of.
const pgRounds = 3

// pgPumpPass times one pump Pass over n rows of a fresh outbox.
func pgPumpPass(ctx context.Context, srv *server, p *pool, newOutbox func() (*sql.DB, string, error), stream string, n int, batch bool) (float64, error) {
	db, _, err := newOutbox()
	if err != nil {
		return 0, err
	}
	defer db.Close()
	return timePass(ctx, srv, p, db, stream, n, batch)
}

// pgRawPass times the raw baseline over n rows of a fresh outbox: publish
// with a Msg-Id, window at a time, and write each window back with one
// UPDATE, as the pump's range write-back does.
func pgRawPass(ctx context.Context, srv *server, p *pool, newOutbox func() (*sql.DB, string, error), stream string, n, window int) (float64, error) {
	raw, _, err := newOutbox()
	if err != nil {
		return 0, err
	}
	defer raw.Close()
	if err := fillOutbox(ctx, raw, p, n); err != nil {
		return 0, err
	}
	// The rows' ids are 1..n in a new outbox: event i is row i.
	return rawPublishWriteBack(ctx, srv, p, stream, n, window, func(ctx context.Context, first, last int, seq uint64) error {
		_, err := raw.ExecContext(ctx, `UPDATE controlfeed_outbox SET published_control_version = id + $1::bigint,
			published_at = now(), last_attempt_at = now(), attempt_count = attempt_count + 1
			WHERE id BETWEEN $2 AND $3 AND published_control_version IS NULL`, int64(seq)-int64(first), first, last)
		return err
	})
}

// median returns the median of xs (not empty); it sorts a copy.
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// formatRates formats rates for a note: "1234/1300/1180".
func formatRates(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.FormatFloat(x, 'f', 0, 64)
	}
	return strings.Join(parts, "/")
}

// pgTakeover runs two pumps on one outbox with the default drainer lock
// interval, terminates the holder's lock session and times until the
// standby holds the lock.
func pgTakeover(ctx context.Context, e *env, srv *server, newOutbox func() (*sql.DB, string, error)) (Result, error) {
	db, u, err := newOutbox()
	if err != nil {
		return Result{}, err
	}
	defer db.Close()
	sink, err := natsfeed.NewSink(ctx, srv.feedConfig("PGTAKEOVER", ""), nil)
	if err != nil {
		return Result{}, err
	}
	defer sink.Close()
	var pumps [2]*outbox.Pump
	for i := range pumps {
		pdb, err := sql.Open("pgx", u)
		if err != nil {
			return Result{}, err
		}
		defer pdb.Close()
		if pumps[i], err = outbox.NewPump(pdb, sink, nil); err != nil {
			return Result{}, err
		}
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{}, len(pumps))
	defer func() {
		cancel()
		for range pumps {
			<-done
		}
	}()
	for _, pump := range pumps {
		go func() { pump.Run(rctx); done <- struct{}{} }()
	}
	holder := func() int {
		for i, pump := range pumps {
			if s := pump.Stats(); !s.Standby && s.Takeovers > 0 {
				return i
			}
		}
		return -1
	}
	wait := func(what string, cond func() bool) error {
		deadline := time.Now().Add(time.Minute)
		for !cond() {
			if time.Now().After(deadline) {
				return fmt.Errorf("pgpump/takeover: no %s within a minute", what)
			}
			time.Sleep(time.Millisecond)
		}
		return nil
	}
	if err := wait("drainer", func() bool { return holder() >= 0 }); err != nil {
		return Result{}, err
	}
	first := holder()
	var n int
	start := time.Now()
	if err := db.QueryRowContext(ctx, `SELECT COUNT(pg_terminate_backend(pid)) FROM pg_locks
		WHERE locktype = 'advisory' AND classid = 1668247157 AND objid = 'controlfeed_outbox'::regclass::oid AND objsubid = 2 AND granted`).Scan(&n); err != nil {
		return Result{}, err
	}
	if n != 1 {
		return Result{}, fmt.Errorf("pgpump/takeover: %d sessions hold the drainer lock, want 1", n)
	}
	if err := wait("takeover", func() bool { h := holder(); return h >= 0 && h != first }); err != nil {
		return Result{}, err
	}
	took := time.Since(start)
	return Result{Name: "pgpump/takeover", Metric: "ms", Value: float64(took.Microseconds()) / 1000, OK: true,
		Note: fmt.Sprintf("pg_terminate_backend of the drainer lock's session -> the standby holds it (DrainerLockInterval %v)", outbox.DefaultDrainerLockInterval)}, nil
}
