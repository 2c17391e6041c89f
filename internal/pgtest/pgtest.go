// Package pgtest gives tests a real PostgreSQL: a fresh schema per test on
// the server named by CONTROLFEED_TEST_POSTGRES_URL, opened through pgx's
// database/sql driver.
//
// Without that variable a test that needs PostgreSQL is skipped, with a
// message saying how to start one, except under CI=true, where it fails:
// CI (.ci/run) always starts a server, so a missing one is a broken run, not
// a reason to test less. By hand:
//
//	bash -c '. .ci/postgres.sh && start_test_postgres && go test -race ./outbox/...'
//
// or point CONTROLFEED_TEST_POSTGRES_URL at any server where the user may
// create schemas (postgres://user@host:port/db).
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
)

// EnvURL names the environment variable holding the test server's URL.
const EnvURL = "CONTROLFEED_TEST_POSTGRES_URL"

// EnvRestart names the environment variable holding a shell command that
// restarts the test server abruptly (pg_ctl restart -m immediate) and
// returns once it accepts connections; .ci/postgres.sh sets it.
const EnvRestart = "CONTROLFEED_TEST_POSTGRES_RESTART"

// Restarter returns a function that restarts the test server with the
// command in EnvRestart, or nil when it is not set (a server the tests do
// not own). It fails t under CI=true without one.
func Restarter(t testing.TB) func() error {
	t.Helper()
	c := os.Getenv(EnvRestart)
	if c == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("pgtest: " + EnvRestart + " is not set; CI must provide it (.ci/postgres.sh sets it)")
		}
		return nil
	}
	return func() error {
		out, err := exec.Command("sh", "-c", c).CombinedOutput()
		if err != nil {
			return fmt.Errorf("pgtest: restart the server (%s): %w: %s", c, err, out)
		}
		return nil
	}
}

// URL returns the test server's URL. Without one it skips t, or fails it
// when CI=true.
func URL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvURL)
	if u != "" {
		return u
	}
	msg := EnvURL + " is not set: this test needs a PostgreSQL server. Run it with a throwaway one: " +
		`bash -c '. .ci/postgres.sh && start_test_postgres && go test -race ./outbox/...'` +
		" (needs initdb/pg_ctl, e.g. Debian's postgresql package), or set " + EnvURL + " to a server where you may create schemas"
	if os.Getenv("CI") == "true" {
		t.Fatal("pgtest: " + msg + "; CI must provide it (.ci/run starts one)")
	}
	t.Skip("pgtest: " + msg)
	return ""
}

// NewSchema creates a schema with a random name on the test server and
// returns a URL whose connections use it (search_path) and carry its name
// as their application_name (for pg_stat_activity). The schema and
// everything in it are dropped when t ends.
func NewSchema(t testing.TB) string {
	t.Helper()
	base := URL(t)
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	schema := "t_" + hex.EncodeToString(b[:])
	admin := open(t, base)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("pgtest: create schema %s on %s: %v", schema, redact(base), err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Logf("pgtest: drop schema %s: %v", schema, err)
		}
		admin.Close()
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("pgtest: %s is not a URL: %v", EnvURL, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	q.Set("application_name", schema) // tells this test's sessions apart in pg_stat_activity
	u.RawQuery = q.Encode()
	return u.String()
}

// Open opens a pool on url (from NewSchema), closed when t ends.
func Open(t testing.TB, url string) *sql.DB {
	t.Helper()
	db := open(t, url)
	t.Cleanup(func() { db.Close() })
	return db
}

func open(t testing.TB, u string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", u)
	if err != nil {
		t.Fatalf("pgtest: open %s: %v", redact(u), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		t.Fatalf("pgtest: connect to %s: %v", redact(u), err)
	}
	return db
}

// redact hides a password in u.
func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	return p.Redacted()
}
