package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/artifact/filestore"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed/filesource"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/internal/pgtest"
	"github.com/controlfeed/controlfeed/kv"
	"github.com/controlfeed/controlfeed/outbox"
)

// withPassword returns the URL u with password pw in its user information.
func withPassword(t *testing.T, u, pw string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	p.User = url.UserPassword(p.User.Username(), pw)
	return p.String()
}

// TestPostgres_KV: kv put/get/list/delete and status on a PostgreSQL
// producer database, through --db and through CONTROLFEED_DB.
func TestPostgres_KV(t *testing.T) {
	u := pgtest.NewSchema(t)
	art := filepath.Join(t.TempDir(), "art")
	env := []string{"CONTROLFEED_DB=" + u, "CONTROLFEED_ARTIFACT_DIR=" + art}
	mustRun(t, env, "", "kv", "put", "b", "two")
	mustRun(t, nil, "one\n", "kv", "put", "--db", u, "--artifact-dir", art, "a", "-")
	mustRun(t, env, "", "kv", "put", "b", "three")
	if got := mustRun(t, env, "", "kv", "get", "b"); got != "three\n" {
		t.Errorf("kv get b = %q", got)
	}
	if got, want := mustRun(t, env, "", "kv", "list"), "a\t\"one\\n\"\nb\tthree\n"; got != want {
		t.Errorf("kv list = %q, want %q", got, want)
	}
	var list []kvJSON
	if err := json.Unmarshal([]byte(mustRun(t, env, "", "kv", "list", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[1].Version != 2 {
		t.Errorf("kv list --json = %+v", list)
	}
	mustRun(t, env, "", "kv", "delete", "a")
	if _, _, err := run(t, env, "", "kv", "get", "a"); err == nil || isUsage(err) {
		t.Errorf("kv get of a deleted key: %v", err)
	}
	var st node.Status
	if err := json.Unmarshal([]byte(mustRun(t, env, "", "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.OutboxPending != 4 || st.PumpHolder != nil {
		t.Errorf("status = %+v, want 4 pending (3 puts, 1 delete) and no pump", st)
	}
	if out := mustRun(t, env, "", "status"); !strings.Contains(out, "outbox pending:  4") || !strings.Contains(out, "none holds the drainer lock") {
		t.Errorf("status:\n%s", out)
	}
	// The file store has no default directory beside a URL.
	if _, _, err := run(t, []string{"CONTROLFEED_DB=" + u}, "", "kv", "put", "c", "x"); err == nil || !isUsage(err) || !strings.Contains(err.Error(), "--artifact-dir") {
		t.Errorf("kv put on PostgreSQL without --artifact-dir: %v, want a usage error naming --artifact-dir", err)
	}
}

// TestPostgres_StatusOnEmptyDatabase: status on a PostgreSQL database no
// producer has run on says so, instead of only PostgreSQL's "relation does
// not exist".
func TestPostgres_StatusOnEmptyDatabase(t *testing.T) {
	u := pgtest.NewSchema(t)
	_, _, err := run(t, nil, "", "status", "--db", u)
	if err == nil || !strings.Contains(err.Error(), "no producer has run on it") {
		t.Fatalf("status on an empty PostgreSQL database: %v, want it to say no producer has run on it", err)
	}
}

// TestPostgres_NodeRefused: a node's database must be SQLite, and the
// commands that work on one refuse a PostgreSQL URL, with the password
// redacted.
func TestPostgres_NodeRefused(t *testing.T) {
	const pw = "n0de-s3cret"
	u := withPassword(t, "postgres://cf@127.0.0.1:1/db", pw)
	for _, args := range [][]string{
		{"serve", "--db", u, "--feed-source", "file", "--feed-dir", t.TempDir()},
		{"skip", "--db", u, "some-event"},
		{"snapshot", "create", "--db", u},
	} {
		_, errOut, err := run(t, nil, "", args...)
		if err == nil || !isUsage(err) {
			t.Errorf("%v: err %v, want a usage error", args[:2], err)
			continue
		}
		msg := err.Error() + errOut
		if !strings.Contains(msg, "SQLite") || strings.Contains(msg, pw) {
			t.Errorf("%v: %s", args[:2], msg)
		}
	}
}

// TestPostgres_PasswordNeverShown: a password in the URL (user information
// or password= parameter) appears in no log line, error or output of serve,
// kv and status, whether the server accepts the connection or not.
func TestPostgres_PasswordNeverShown(t *testing.T) {
	const pw = "pg-s3cret-Pa55"
	base := pgtest.NewSchema(t)
	art := filepath.Join(t.TempDir(), "art")
	good := withPassword(t, base, pw) // the test server trusts: the password is ignored
	bad := withPassword(t, "postgres://cf@127.0.0.1:1/db?connect_timeout=2", pw)
	param := "postgres://cf@127.0.0.1:1/db?connect_timeout=2&password=" + pw
	check := func(what, s string) {
		t.Helper()
		if strings.Contains(s, pw) {
			t.Errorf("%s shows the password:\n%s", what, s)
		}
	}
	for _, u := range []string{good, bad, param} {
		for _, args := range [][]string{
			{"kv", "put", "--db", u, "--artifact-dir", art, "k", "v"},
			{"kv", "get", "--db", u, "missing"},
			{"kv", "list", "--db", u},
			{"status", "--db", u},
		} {
			out, errOut, err := run(t, nil, "", args...)
			check(fmt.Sprint(args[:2]), out+errOut+fmt.Sprint(err))
		}
	}
	if got := node.RedactDB(param); strings.Contains(got, pw) || !strings.Contains(got, "password=xxxxx") {
		t.Errorf("RedactDB(%q) = %q", param, got)
	}
	// serve logs the database it opens, and fails on one that does not
	// answer.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var stderr syncBuffer
	m := &Main{Stdout: &stderr, Stderr: &stderr, Environ: func() []string { return nil }}
	err := m.Run(ctx, []string{"serve", "--db", good, "--feed-sink", "file", "--feed-dir", t.TempDir(), "--artifact-dir", art, "--log-level", "debug"})
	check("serve", stderr.String()+fmt.Sprint(err))
	if !strings.Contains(stderr.String(), "controlfeed node starting") {
		t.Errorf("serve did not start:\n%s", stderr.String())
	}
	// A server that does not answer: serve waits for it, saying so.
	var stderr2 syncBuffer
	m = &Main{Stdout: &stderr2, Stderr: &stderr2, Environ: func() []string { return nil }}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel2()
	m.Run(ctx2, []string{"serve", "--db", bad, "--feed-sink", "file", "--feed-dir", t.TempDir(), "--artifact-dir", art})
	if !strings.Contains(stderr2.String(), "the PostgreSQL server does not answer; retrying") {
		t.Errorf("serve on a server that does not answer:\n%s", stderr2.String())
	}
	check("serve (no server)", stderr2.String())
}

// pgStatus reads a process's /v1/status.
func pgStatus(t *testing.T, addr string) node.Status {
	t.Helper()
	var st node.Status
	if err := json.Unmarshal([]byte(httpGet(t, "http://"+addr+"/v1/status")), &st); err != nil {
		return node.Status{}
	}
	return st
}

// TestPostgres_TwoServesTakeover runs two producer serve processes on one
// PostgreSQL database and a node on SQLite, all sharing a file feed: one
// producer publishes, the other stands by (status and /v1/status say so);
// after a SIGKILL of the publishing one the other takes over and the node
// converges to the producer's table, with every event applied once.
func TestPostgres_TwoServesTakeover(t *testing.T) {
	if binary == "" {
		t.Skip("needs the controlfeed binary; not built with -short")
	}
	u := pgtest.NewSchema(t)
	pg := pgtest.Open(t, u)
	ctx := context.Background()
	dir := t.TempDir()
	feedDir, art := filepath.Join(dir, "feed"), filepath.Join(dir, "art")
	store, err := filestore.New(art, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := migrateProducer(ctx, pg); err != nil {
		t.Fatal(err)
	}
	// pgtest names the sessions after the schema; serve names its own
	// after the process when the URL does not.
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	q := pu.Query()
	q.Del("application_name")
	pu.RawQuery = q.Encode()
	serveURL := pu.String()
	common := []string{"--feed-sink", "file", "--feed-dir", feedDir, "--artifact-dir", art, "--poll-interval", "20ms"}
	prods := map[string]*proc{}
	addrs := map[string]string{}
	for _, name := range []string{"pa", "pb"} {
		addrs[name] = freeAddr(t)
		prods[name] = &proc{name: name, logf: filepath.Join(dir, name+".log"),
			args: append([]string{"serve", "--db", serveURL, "--node-name", name, "--listen", addrs[name]}, common...)}
	}
	nodeDB := filepath.Join(dir, "node.db")
	nd := &proc{name: "node", logf: filepath.Join(dir, "node.log"), args: []string{"serve", "--db", nodeDB, "--feed-source", "file",
		"--feed-dir", feedDir, "--artifact-dir", art, "--poll-interval", "20ms", "--node-name", "node"}}
	all := []*proc{prods["pa"], prods["pb"], nd}
	t.Cleanup(func() {
		for _, p := range all {
			if p.running() {
				p.kill()
			}
		}
		if t.Failed() {
			for _, p := range all {
				t.Logf("--- %s log (tail) ---\n%s", p.name, p.logTail())
			}
		}
	})
	prods["pa"].start(t)
	prods["pb"].start(t)
	for i := range 50 {
		putRetrying(t, ctx, pg, store, fmt.Sprintf("k%02d", i%20), fmt.Appendf(nil, "v%d", i))
	}
	// Exactly one holds the drainer lock; find it by its application_name.
	holderName := func() string {
		st, err := node.ReadStatus(ctx, pg)
		if err != nil || st.PumpHolder == nil {
			return ""
		}
		for name, p := range prods {
			if p.running() && strings.Contains(st.PumpHolder.ApplicationName, "pid "+strconv.Itoa(p.cmd.Process.Pid)) {
				return name
			}
		}
		return ""
	}
	var holder string
	waitFor(t, 30*time.Second, "one producer holding the drainer lock", func() bool { holder = holderName(); return holder != "" })
	standby := map[string]string{"pa": "pb", "pb": "pa"}[holder]
	waitFor(t, 30*time.Second, "the other producer standing by in /v1/status", func() bool {
		s := pgStatus(t, addrs[standby])
		return s.Process != nil && s.Process.HasPump && s.Process.PumpStandby
	})
	if s := pgStatus(t, addrs[holder]); s.Process == nil || s.Process.PumpStandby || s.Process.PumpTakeovers != 1 {
		t.Errorf("holder %s /v1/status process = %+v", holder, s.Process)
	}
	if out, _ := runBinary(t, nil, "", "status", "--db", u); !strings.Contains(out, "controlfeed "+holder+" pid") {
		t.Errorf("status does not name the holder %s:\n%s", holder, out)
	}
	nd.start(t)

	prods[holder].kill()
	killed := time.Now()
	waitFor(t, 30*time.Second, "the standby taking over", func() bool { return holderName() == standby })
	t.Logf("%s took over from %s (SIGKILL) within %v", standby, holder, time.Since(killed).Round(time.Millisecond))
	for i := 50; i < 100; i++ {
		putRetrying(t, ctx, pg, store, fmt.Sprintf("k%02d", i%25), fmt.Appendf(nil, "v%d", i))
	}
	if _, _, err := kv.Delete(ctx, pg, "k03"); err != nil {
		t.Fatal(err)
	}
	ndb := openTestDB(t, ctx, nodeDB)
	want, err := kv.Digest(ctx, pg)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the node converging to the producer", func() bool {
		st, err := node.ReadStatus(ctx, pg)
		if err != nil || st.OutboxPending != 0 {
			return false
		}
		got, err := kv.Digest(ctx, ndb)
		return err == nil && got == want
	})
	if s := pgStatus(t, addrs[standby]); s.Process == nil || s.Process.PumpStandby || s.Process.PumpTakeovers != 1 {
		t.Errorf("new holder %s /v1/status process = %+v", standby, s.Process)
	}
	// Every event of the outbox applied exactly once (applied_events has
	// one row per EventID by construction; count them against the feed).
	applied := appliedEvents(t, ctx, ndb)
	var rows int
	if err := pg.QueryRowContext(ctx, `SELECT count(*) FROM controlfeed_outbox`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if len(applied) != rows {
		t.Errorf("node applied %d events, the outbox has %d", len(applied), rows)
	}
	src, err := filesource.NewSource(feedDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var evs []controlevent.Event
	for since := uint64(0); ; {
		batch, err := src.Poll(ctx, since)
		if err != nil {
			t.Fatal(err)
		}
		if len(batch) == 0 {
			break
		}
		for _, e := range batch {
			seen[e.EventID] = true
		}
		evs = append(evs, batch...)
		since = batch[len(batch)-1].ControlVersion
	}
	if len(seen) != rows {
		t.Errorf("the feed holds %d distinct events (%d in all), the outbox %d", len(seen), len(evs), rows)
	}
}

// migrateProducer migrates the producer's tables on a PostgreSQL pool.
func migrateProducer(ctx context.Context, db *sql.DB) error {
	for _, m := range []func(context.Context, *sql.DB) error{outbox.Migrate, kv.Migrate} {
		if err := m(ctx, db); err != nil {
			return err
		}
	}
	return nil
}

// TestPostgres_PasswordNotEchoed: a PostgreSQL URL given where it does not
// belong (another flag, a node command) is never printed with its password,
// whichever message quotes it. No server needed.
func TestPostgres_PasswordNotEchoed(t *testing.T) {
	const pw = "echo-s3cret-Pa55"
	u := "postgres://controlfeed:" + pw + "@/postgres?host=/tmp/none&port=5"
	p := "postgres://cf@/db?host=/tmp/none&password=" + pw
	dir := t.TempDir()
	for _, args := range [][]string{
		{"serve", "--db", filepath.Join(dir, "n.db"), "--feed-source", u},
		{"serve", "--db", filepath.Join(dir, "n.db"), "--feed-sink", p},
		{"snapshot", "publish", "--db", u, "--feed-dir", dir, "--artifact-dir", dir},
		{"prune", "--feed-dir", dir, "--through", "3", "--db", u},
		{"fleet", "--feed-dir", u},
		{"tail", "--feed-source", "file", "--feed-dir", p, "--follow=false"},
	} {
		_, stderr, err := run(t, nil, "", args...)
		var out bytes.Buffer
		exitCode(err, &out)
		if err == nil {
			t.Errorf("%v succeeded", args)
		}
		if strings.Contains(out.String(), pw) || strings.Contains(stderr, pw) {
			t.Errorf("%v shows the password:\n%s%s", args, out.String(), stderr)
		}
	}
}

func TestRedactText(t *testing.T) {
	for in, want := range map[string]string{
		`open "postgres://u:pw@h/db": no`:         `open "postgres://u:xxxxx@h/db": no`,
		`postgresql://u:p%40w@h/db and more`:      `postgresql://u:xxxxx@h/db and more`,
		`postgres://u@h/db?sslmode=x&password=pw`: `postgres://u@h/db?sslmode=x&password=xxxxx`,
		`host=h password=pw user=u`:               `host=h password=xxxxx user=u`,
		`postgres://u@h/db`:                       `postgres://u@h/db`,
	} {
		if got := node.RedactText(in); got != want {
			t.Errorf("RedactText(%q) = %q, want %q", in, got, want)
		}
	}
}
