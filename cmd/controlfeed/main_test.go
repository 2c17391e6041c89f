package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
)

// binary is the controlfeed executable built by TestMain for the end-to-end
// tests; empty with -short.
var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	code := func() int {
		if !testing.Short() {
			dir, err := os.MkdirTemp("", "controlfeed-bin-")
			if err != nil {
				panic(err)
			}
			defer os.RemoveAll(dir)
			binary = filepath.Join(dir, "controlfeed")
			out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
			if err != nil {
				os.Stderr.Write(out)
				panic("go build: " + err.Error())
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

// run runs the command in-process with the given environment and stdin, and
// returns its stdout, stderr and error.
func run(t *testing.T, env []string, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	m := &Main{
		Stdin:   strings.NewReader(stdin),
		Stdout:  &stdout,
		Stderr:  &stderr,
		Environ: func() []string { return env },
	}
	err := m.Run(context.Background(), args)
	return stdout.String(), stderr.String(), err
}

// mustRun is run that fails the test on error.
func mustRun(t *testing.T, env []string, stdin string, args ...string) string {
	t.Helper()
	out, errOut, err := run(t, env, stdin, args...)
	if err != nil {
		t.Fatalf("controlfeed %s: %v\nstderr:\n%s", strings.Join(args, " "), err, errOut)
	}
	return out
}

func isUsage(err error) bool {
	var ue *usageError
	return errors.As(err, &ue)
}

func TestRun_Help(t *testing.T) {
	top := mustRun(t, nil, "", "--help")
	for _, c := range commands {
		if !strings.Contains(top, c.name) {
			t.Errorf("top-level help does not mention %q", c.name)
		}
	}
	for _, env := range validEnvNames() {
		if !strings.Contains(top, env) {
			t.Errorf("top-level help does not list %s", env)
		}
	}
	if got := mustRun(t, nil, "", "help"); got != top {
		t.Errorf("\"help\" differs from \"--help\"")
	}
	for _, c := range commands {
		args := append(strings.Fields(c.name), "--help")
		out := mustRun(t, nil, "", args...)
		if strings.Count(out, "Usage: controlfeed "+c.name) != 1 || !strings.Contains(out, "Example:\n  controlfeed ") {
			t.Errorf("%s --help lacks the usage line or the example:\n%s", c.name, out)
		}
		for _, name := range c.settings {
			if !strings.Contains(out, "--"+name) || !strings.Contains(out, "env "+c.envName(name)) {
				t.Errorf("%s --help does not document --%s and %s:\n%s", c.name, name, c.envName(name), out)
			}
		}
		if via := mustRun(t, nil, "", append([]string{"help"}, strings.Fields(c.name)...)...); via != out {
			t.Errorf("\"help %s\" differs from \"%s --help\"", c.name, c.name)
		}
	}
	out := mustRun(t, nil, "", "serve", "--help")
	for _, want := range []string{"default nop", "default file", "default <db>.artifacts", "default text", "default info"} {
		if !strings.Contains(out, want) {
			t.Errorf("serve --help does not say %q", want)
		}
	}
}

func TestRun_UsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"NoCommand", nil, "no command"},
		{"UnknownCommand", []string{"bogus"}, `unknown command "bogus"`},
		{"UnknownFlag", []string{"status", "--nope"}, "nope"},
		{"MissingDB", []string{"status"}, "--db is required"},
		{"KVNoSub", []string{"kv"}, "missing subcommand"},
		{"KVGetNoKey", []string{"kv", "get", "--db", "x.db"}, "want arguments KEY"},
		{"KVPutTooMany", []string{"kv", "put", "--db", "x.db", "a", "b", "c"}, "want arguments"},
		{"FlagAfterDashDash", []string{"kv", "get", "--", "k", "--db", "x.db"}, `got ["k" "--db" "x.db"]`},
		{"InterspersedFlags", []string{"kv", "get", "k", "--log-level", "loud", "--db", "x.db"}, `--log-level "loud"`},
		{"BadLogFormat", []string{"status", "--db", "x.db", "--log-format", "xml"}, `--log-format "xml"`},
		{"BadLogLevel", []string{"status", "--db", "x.db", "--log-level", "loud"}, `--log-level "loud"`},
		{"TailNop", []string{"tail"}, "has no events"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := run(t, nil, "", tc.args...)
			if err == nil || !isUsage(err) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v (usage error: %v), want a usage error containing %q", err, isUsage(err), tc.want)
			}
		})
	}
}

func TestRun_UnknownEnvVar(t *testing.T) {
	env := []string{"HOME=/x", "CONTROLFEED_DB=a.db", "CONTROLFEED_FEED_SORCE=file", "CONTROLFEED_ZZZ=1",
		"CONTROLFEED_CHAOS_REPORT=/tmp/r.txt"} // the test suites' variables pass
	_, _, err := run(t, env, "", "status")
	if err == nil || !isUsage(err) {
		t.Fatalf("error = %v, want a usage error", err)
	}
	msg := err.Error()
	for _, want := range []string{"CONTROLFEED_FEED_SORCE, CONTROLFEED_ZZZ", "CONTROLFEED_FEED_SOURCE", "CONTROLFEED_ARTIFACT_DIR"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if strings.Contains(msg, "HOME") || strings.Contains(msg, "CHAOS") {
		t.Errorf("error %q mentions a variable that is not controlfeed's", msg)
	}
}

func TestParse_EnvAndFlags(t *testing.T) {
	m := &Main{Environ: func() []string {
		return []string{"CONTROLFEED_FEED_DIR=/from/env", "CONTROLFEED_FEED_SOURCE=file", "CONTROLFEED_POLL_INTERVAL=250ms",
			"CONTROLFEED_FOLLOW=false", "CONTROLFEED_NATS_URL=nats://a:1, nats://b:2"}
	}}
	var s settings
	if _, err := tailCmd.parse(m, &s, []string{"--feed-dir", "/from/flag"}); err != nil {
		t.Fatal(err)
	}
	if s.FeedDir != "/from/flag" {
		t.Errorf("FeedDir = %q: the flag must override the environment", s.FeedDir)
	}
	if s.FeedSource != "file" || s.PollInterval != 250*time.Millisecond || s.Follow {
		t.Errorf("environment not applied: source %q, poll %v, follow %v", s.FeedSource, s.PollInterval, s.Follow)
	}
	if got := s.natsURLs(); len(got) != 2 || got[0] != "nats://a:1" || got[1] != "nats://b:2" {
		t.Errorf("natsURLs() = %q", got)
	}

	var d settings
	if _, err := serveCmd.parse(&Main{}, &d, []string{"--db", "/x/n.db"}); err != nil {
		t.Fatal(err)
	}
	if d.FeedSource != "nop" || d.FeedSink != "nop" || d.ArtifactStore != "file" || d.LogFormat != "text" || d.LogLevel != "info" {
		t.Errorf("defaults: %+v", d)
	}
	if got := d.artifactDir(); got != "/x/n.db.artifacts" {
		t.Errorf("artifactDir() = %q, want /x/n.db.artifacts", got)
	}
	if d.nodeName() == "" {
		t.Error("nodeName() is empty")
	}

	var g settings
	genv := &Main{Environ: func() []string { return []string{"CONTROLFEED_UNAVAILABLE_GRACE=2s"} }}
	if _, err := serveCmd.parse(genv, &g, []string{"--db", "/x/n.db"}); err != nil {
		t.Fatal(err)
	}
	if cfg := g.nodeConfig(nil); cfg.UnavailableGrace != 2*time.Second {
		t.Errorf("CONTROLFEED_UNAVAILABLE_GRACE=2s: node UnavailableGrace = %v", cfg.UnavailableGrace)
	}
	if _, err := serveCmd.parse(&Main{}, &g, []string{"--db", "/x/n.db", "--unavailable-grace", "750ms"}); err != nil || g.UnavailableGrace != 750*time.Millisecond {
		t.Errorf("--unavailable-grace 750ms: %v, %v", g.UnavailableGrace, err)
	}

	bad := &Main{Environ: func() []string { return []string{"CONTROLFEED_POLL_INTERVAL=soon"} }}
	_, err := serveCmd.parse(bad, &settings{}, nil)
	if err == nil || !isUsage(err) || !strings.Contains(err.Error(), "CONTROLFEED_POLL_INTERVAL") {
		t.Errorf("bad env value: error = %v, want a usage error naming CONTROLFEED_POLL_INTERVAL", err)
	}
}

func TestServe_UnknownBackend(t *testing.T) {
	db := filepath.Join(t.TempDir(), "n.db")
	_, _, err := run(t, nil, "", "serve", "--db", db, "--feed-source", "kafka")
	if err == nil || !strings.Contains(err.Error(), `"kafka"`) || !strings.Contains(err.Error(), "file, ") {
		t.Errorf("error = %v, want it to name kafka and list the sources", err)
	}
	_, _, err = run(t, []string{"CONTROLFEED_FEED_SINK=s3"}, "", "serve", "--db", db)
	if err == nil || !strings.Contains(err.Error(), `"s3"`) || !strings.Contains(err.Error(), "nop") {
		t.Errorf("error = %v, want it to name s3 and list the sinks", err)
	}
	_, _, err = run(t, nil, "", "kv", "put", "--db", db, "--artifact-store", "gcs", "k", "v")
	if err == nil || !strings.Contains(err.Error(), `"gcs"`) || !strings.Contains(err.Error(), "file") {
		t.Errorf("error = %v, want it to name gcs and list the stores", err)
	}
}

func TestServe_StopsOnCancel(t *testing.T) {
	db := filepath.Join(t.TempDir(), "n.db")
	var stderr syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- (&Main{Stderr: &stderr}).Run(ctx, []string{"serve", "--db", db, "--log-format", "json"})
	}()
	waitFor(t, 30*time.Second, "serve to start", func() bool { return strings.Contains(stderr.String(), "single-node mode") })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve returned %v after cancel, want nil", err)
	}
	if !strings.Contains(stderr.String(), `"msg":"controlfeed node stopped"`) {
		t.Errorf("serve did not log its stop in JSON:\n%s", stderr.String())
	}
}

func TestKV_RoundTrip(t *testing.T) {
	dir := t.TempDir()
	env := []string{"CONTROLFEED_DB=" + filepath.Join(dir, "p.db")}

	id := strings.TrimSpace(mustRun(t, env, "", "kv", "put", "b", "two"))
	if err := (controlevent.Event{EventID: id, Type: "x"}).ValidateUnpublished(); err != nil || id == "" {
		t.Errorf("kv put printed %q, want an event id (%v)", id, err)
	}
	mustRun(t, env, "one\n", "kv", "put", "a", "-")
	mustRun(t, env, "tab\there", "kv", "put", "c", "-")
	if got := mustRun(t, env, "", "kv", "get", "a"); got != "one\n" {
		t.Errorf("kv get a = %q, want %q", got, "one\n")
	}
	if got := mustRun(t, env, "", "kv", "get", "b"); got != "two\n" {
		t.Errorf("kv get b = %q, want %q", got, "two\n")
	}
	if got, want := mustRun(t, env, "", "kv", "list"), "a\t\"one\\n\"\nb\ttwo\nc\t\"tab\\there\"\n"; got != want {
		t.Errorf("kv list = %q, want %q", got, want)
	}

	var list []kvJSON
	if err := json.Unmarshal([]byte(mustRun(t, env, "", "kv", "list", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 || list[0].Key != "a" || list[0].Value != "one\n" || list[2].Value != "tab\there" ||
		list[1].Version < 1 || list[1].UpdatedAt.IsZero() {
		t.Errorf("kv list --json = %+v", list)
	}

	if out := mustRun(t, env, "", "kv", "delete", "b"); strings.TrimSpace(out) == "" {
		t.Error("kv delete printed no event id")
	}
	_, _, err := run(t, env, "", "kv", "get", "b")
	if err == nil || isUsage(err) || !strings.Contains(err.Error(), `"b"`) {
		t.Errorf("kv get of a deleted key: error = %v, want a non-usage error naming the key", err)
	}
	if _, errOut, err := run(t, env, "", "kv", "delete", "b"); err != nil || !strings.Contains(errOut, "no such key") {
		t.Errorf("kv delete of a missing key: err %v, stderr %q", err, errOut)
	}

	st := mustRun(t, env, "", "status", "--json")
	var m map[string]any
	if err := json.Unmarshal([]byte(st), &m); err != nil {
		t.Fatal(err)
	}
	if m["outbox_pending"] != float64(4) {
		t.Errorf("outbox_pending = %v, want 4 (3 puts + 1 delete, no pump)", m["outbox_pending"])
	}
}

func TestStatus_JSON(t *testing.T) {
	db := filepath.Join(t.TempDir(), "n.db")
	for _, args := range [][]string{{"status"}, {"kv", "list"}, {"kv", "get", "k"}, {"kv", "delete", "k"}, {"skip", "e"}} {
		_, _, err := run(t, nil, "", append(args, "--db", db)...)
		if err == nil || !strings.Contains(err.Error(), "no such file") {
			t.Errorf("%s on a missing database: error %v, want one saying it does not exist", args, err)
		}
	}
	mustRun(t, nil, "", "serve", "--db", db, "--help") // help creates nothing
	if _, err := os.Stat(db); err == nil {
		t.Fatal("serve --help created the database")
	}
	mustRun(t, nil, "", "kv", "put", "--db", db, "k", "v") // creates it
	out := mustRun(t, nil, "", "status", "--db", db, "--json")
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("status --json is not JSON: %v\n%s", err, out)
	}
	for _, k := range []string{"cursor", "halted", "outbox_pending", "outbox_dead", "applied", "skipped", "head", "lag", "state_digest"} {
		if _, ok := m[k]; !ok {
			t.Errorf("status --json lacks %q: %s", k, out)
		}
	}
	if m["cursor"] != float64(0) || m["halted"] != nil || m["outbox_pending"] != float64(1) || m["head"] != nil {
		t.Errorf("status of a producer with one pending put: %s", out)
	}
	text := mustRun(t, nil, "", "status", "--db", db)
	if !strings.Contains(text, "cursor:") || !strings.Contains(text, "halted:          no") ||
		!strings.Contains(text, "state digest:    sha256:0000000000000000000000000000000000000000000000000000000000000000 (at cursor 0)") {
		t.Errorf("status text:\n%s", text)
	}
}

func TestTail(t *testing.T) {
	dir := t.TempDir()
	sink, err := feed.OpenSink("file", feed.SourceConfig{FileDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(sink)
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i, key := range []string{"k1", "", "k3"} {
		_, err := sink.Append(context.Background(), controlevent.Event{
			EventID: "evt-" + string(rune('a'+i)), Type: "kv.put", Key: key, CreatedAt: created})
		if err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"CONTROLFEED_FEED_SOURCE=file", "CONTROLFEED_FEED_DIR=" + dir}
	out := mustRun(t, env, "", "tail", "--follow=false", "--from", "1")
	want := "2\tkv.put\t-\tevt-b\t2026-01-02T03:04:05Z\n3\tkv.put\tk3\tevt-c\t2026-01-02T03:04:05Z\n"
	if out != want {
		t.Errorf("tail = %q, want %q", out, want)
	}
	// --feed-dir alone means the file feed (it used to say "nop has no
	// events").
	if got := mustRun(t, nil, "", "tail", "--follow=false", "--from", "1", "--feed-dir", dir); got != want {
		t.Errorf("tail --feed-dir without --feed-source = %q, want %q", got, want)
	}
	out = mustRun(t, env, "", "tail", "--follow=false", "--json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("tail --json printed %d lines, want 3:\n%s", len(lines), out)
	}
	for i, l := range lines {
		e, err := controlevent.Decode([]byte(l))
		if err != nil || e.ControlVersion != uint64(i+1) {
			t.Errorf("line %d: %q: %v", i, l, err)
		}
	}

	// --follow: a cancelled tail returns nil after printing what it saw.
	ctx, cancel := context.WithCancel(context.Background())
	var buf syncBuffer
	done := make(chan error, 1)
	go func() {
		m := &Main{Stdout: &buf, Environ: func() []string { return env }}
		done <- m.Run(ctx, []string{"tail", "--from", "3"})
	}()
	if _, err := sink.Append(ctx, controlevent.Event{EventID: "evt-d", Type: "kv.delete", Key: "k1", CreatedAt: created}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "tail to print evt-d", func() bool { return strings.Contains(buf.String(), "evt-d") })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("tail --follow returned %v after cancel, want nil", err)
	}
	if got := buf.String(); got != "4\tkv.delete\tk1\tevt-d\t2026-01-02T03:04:05Z\n" {
		t.Errorf("tail --follow printed %q", got)
	}
}

// TestTail_InvalidMessage: tail prints a feed message that is not a valid
// event as such (position, id, reason; --json marks it "invalid") and goes
// on with the events after it, instead of exiting at it.
func TestTail_InvalidMessage(t *testing.T) {
	dir := t.TempDir()
	sink, err := feed.OpenSink("file", feed.SourceConfig{FileDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(sink)
	for i := range 3 {
		if _, err := sink.Append(context.Background(), controlevent.Event{
			EventID: fmt.Sprintf("evt-%d", i+1), Type: "kv.put", Key: "k", CreatedAt: time.Unix(0, 0)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%020d.json", 2)), []byte("not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"CONTROLFEED_FEED_SOURCE=file", "CONTROLFEED_FEED_DIR=" + dir}
	out := mustRun(t, env, "", "tail", "--follow=false")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "1\tkv.put") || !strings.HasPrefix(lines[1], "2\tINVALID\t-\t") || !strings.HasPrefix(lines[2], "3\tkv.put") {
		t.Fatalf("tail printed:\n%s\nwant event 1, the invalid message at 2, event 3", out)
	}
	out = mustRun(t, env, "", "tail", "--follow=false", "--json")
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("tail --json printed %d lines, want 3:\n%s", len(lines), out)
	}
	var inv struct {
		Invalid        bool   `json:"invalid"`
		ControlVersion uint64 `json:"control_version"`
		Error          string `json:"error"`
	}
	if err := json.Unmarshal([]byte(lines[1]), &inv); err != nil || !inv.Invalid || inv.ControlVersion != 2 || inv.Error == "" {
		t.Fatalf("tail --json line for the invalid message = %s (%v), want invalid true at control_version 2 with its error", lines[1], err)
	}
}

// TestExitCode_OnePrefix: an error that names its command is printed once,
// not as "controlfeed: controlfeed serve: ...".
func TestExitCode_OnePrefix(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{usageErrorf("controlfeed serve: unknown flag --x"), "controlfeed serve: unknown flag --x\n"},
		{errors.New("node: not a controlfeed database: x.db"), "controlfeed: node: not a controlfeed database: x.db\n"},
		{errors.New("controlfeed: boom"), "controlfeed: boom\n"},
	} {
		var b strings.Builder
		exitCode(tc.err, &b)
		if b.String() != tc.want {
			t.Errorf("exitCode(%q) printed %q, want %q", tc.err, b.String(), tc.want)
		}
	}
}
