package main

// Operator mistakes about limits and the command line, tried on the real
// binary: each test checks the refusal, its exit status and message, and
// that no database, directory or feed changed. docs/RELIABILITY.md lists
// them ("Limits and the command line").

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/filestore"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/filesource"
	"github.com/controlfeed/controlfeed/internal/failpoint"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/kv"
)

// producerDir returns a directory holding a producer database p.db with one
// key and its artifact store p.db.artifacts, and the database's path.
func producerDir(t *testing.T) (dir, db string) {
	t.Helper()
	dir = t.TempDir()
	db = filepath.Join(dir, "p.db")
	if out, code := runBinary(t, nil, "", "kv", "put", "--db", db, "seed", "v"); code != 0 {
		t.Fatalf("kv put seed: exit %d\n%s", code, out)
	}
	return dir, db
}

// wantRefused checks the exit status and that out contains every want.
func wantRefused(t *testing.T, out string, code, wantCode int, want ...string) {
	t.Helper()
	if code != wantCode {
		t.Errorf("exit status %d, want %d\n%s", code, wantCode, out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output does not say %q:\n%s", w, out)
		}
	}
}

// A value larger than the nodes' limit, from standard input, is refused
// before anything is stored, and reading it costs about the limit in
// memory, not the input's size.
func TestMisuse_KVPutTooLargeStdin(t *testing.T) {
	if binary == "" {
		t.Skip("needs the controlfeed binary; not built with -short")
	}
	dir, db := producerDir(t)
	before := treeDigest(t, dir)
	const size = 300 << 20
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "kv", "put", "--db", db, "big", "-")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	cmd.Stdin = io.LimitReader(zeros{}, size)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("kv put of %d bytes: %v, want exit status 1\n%s", size, err, out)
	}
	wantRefused(t, string(out), ee.ExitCode(), 1,
		`kv put "big": the value is more than 268435456 bytes`, "larger than --max-artifact-bytes 268435456 (256 MiB)",
		"nothing was stored")
	assertUnchanged(t, dir, before)
	// Reading 300 MiB with io.ReadAll peaks at 512 MiB of buffers and more;
	// reading at most the limit, in chunks, stays near 256 MiB.
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		if rss := ru.Maxrss << 10; rss > 256<<20+192<<20 {
			t.Errorf("kv put peaked at %d MiB of memory refusing a %d MiB value; want about the 256 MiB limit", rss>>20, size>>20)
		}
	}
}

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// countingReader counts the bytes read from it and fails once more than
// limit were read, so that a reader that reads everything fails fast.
type countingReader struct {
	n, limit int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.n > c.limit {
		return 0, errors.New("read past the limit")
	}
	c.n += int64(len(p))
	return len(p), nil
}

// kv put reads standard input no further than the limit plus one byte.
func TestMisuse_KVPutReadsAtMostTheLimit(t *testing.T) {
	db := filepath.Join(t.TempDir(), "p.db")
	const limit = 1 << 20
	r := &countingReader{limit: 4 * limit}
	m := &Main{Stdin: r}
	err := m.Run(context.Background(), []string{"kv", "put", "--db", db, "--max-artifact-bytes", fmt.Sprint(limit), "k", "-"})
	if err == nil || !strings.Contains(err.Error(), "larger than --max-artifact-bytes 1048576 (1 MiB)") {
		t.Fatalf("kv put of an endless input = %v, want the limit refusal", err)
	}
	if r.n > limit+64<<10 {
		t.Errorf("kv put read %d bytes of standard input to refuse it, want at most about the %d-byte limit", r.n, limit)
	}
	if _, err := os.Stat(db); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused put created the database: %v", err)
	}
}

// The limit is one flag and one variable, with the same default, on kv put
// and serve; a value over it on the command line is refused too.
func TestMisuse_KVPutOverLimit(t *testing.T) {
	dir, db := producerDir(t)
	before := treeDigest(t, dir)
	out, code := runBinary(t, nil, "", "kv", "put", "--db", db, "--max-artifact-bytes", "4", "k", "12345")
	wantRefused(t, out, code, 1, "the value is 5 bytes, larger than --max-artifact-bytes 4 (4 B)")
	out, code = runBinary(t, []string{"CONTROLFEED_MAX_ARTIFACT_BYTES=4"}, "12345", "kv", "put", "--db", db, "k", "-")
	wantRefused(t, out, code, 1, "larger than --max-artifact-bytes 4")
	out, code = runBinary(t, nil, "", "kv", "put", "--db", db, "--max-artifact-bytes", "0", "k", "v")
	wantRefused(t, out, code, 2, "--max-artifact-bytes 0: want a positive number of bytes")
	assertUnchanged(t, dir, before)

	for _, c := range []string{"serve", "kv put"} {
		help, _ := runBinary(t, nil, "", append(strings.Fields(c), "--help")...)
		if !strings.Contains(help, "--max-artifact-bytes BYTES") ||
			!strings.Contains(help, "env CONTROLFEED_MAX_ARTIFACT_BYTES, default 268435456 (256 MiB)") {
			t.Errorf("%s --help does not document --max-artifact-bytes with its variable and default:\n%s", c, help)
		}
	}
}

// "kv put KEY" without a value is a usage error, not an empty value read
// from an empty standard input.
func TestMisuse_KVPutNoValue(t *testing.T) {
	dir, db := producerDir(t)
	before := treeDigest(t, dir)
	out, code := runBinary(t, nil, "", "kv", "put", "--db", db, "k")
	wantRefused(t, out, code, 2, `kv put "k": no value: give VALUE, or "-" to read it from standard input`)
	assertUnchanged(t, dir, before)
	if out, code := runBinary(t, nil, "", "kv", "put", "--db", db, "k", ""); code != 0 {
		t.Errorf(`kv put KEY "" (an explicit empty value): exit %d\n%s`, code, out)
	}
}

// An unknown flag prints the problem and one usage line, not the help.
func TestMisuse_UnknownFlag(t *testing.T) {
	dir := t.TempDir()
	before := treeDigest(t, dir)
	for _, args := range [][]string{
		{"serve", "--db", filepath.Join(dir, "n.db"), "--feed-dri", "x"},
		{"kv", "put", "--db", filepath.Join(dir, "n.db"), "--bogus", "k", "v"},
		{"status", "--nope"},
		{"tail", "--form", "3"},
	} {
		name := args[0]
		if name == "kv" {
			name = "kv put"
		}
		flagName := ""
		for _, a := range args {
			if a == "--feed-dri" || a == "--bogus" || a == "--nope" || a == "--form" {
				flagName = a
			}
		}
		out, code := runBinary(t, nil, "", args...)
		wantRefused(t, out, code, 2, "unknown flag "+flagName, "run 'controlfeed "+name+" --help' for the flags")
		if n := strings.Count(strings.TrimSpace(out), "\n") + 1; n > 2 || strings.Contains(out, "Example:") {
			t.Errorf("controlfeed %s: %d lines of output, want the error and one usage line:\n%s", name, n, out)
		}
	}
	assertUnchanged(t, dir, before)
}

// Backend names and the file feed's directory are checked in the command
// line's words before anything is created.
func TestMisuse_BackendFlagsInCLIWords(t *testing.T) {
	dir := t.TempDir()
	before := treeDigest(t, dir)
	db := filepath.Join(dir, "n.db")
	for _, tc := range []struct {
		args []string
		env  []string
		want []string
	}{
		{[]string{"serve", "--db", db, "--feed-source", "bogus"}, nil,
			[]string{`--feed-source "bogus" (or CONTROLFEED_FEED_SOURCE): want one of file, jetstream, nop`}},
		{[]string{"serve", "--db", db}, []string{"CONTROLFEED_FEED_SINK=s3"},
			[]string{`--feed-sink "s3" (or CONTROLFEED_FEED_SINK): want one of file, jetstream, nop`}},
		{[]string{"serve", "--db", db, "--feed-source", "file"}, nil,
			[]string{"--feed-source file needs --feed-dir DIR (or CONTROLFEED_FEED_DIR)"}},
		{[]string{"serve", "--db", db, "--feed-sink", "file"}, nil,
			[]string{"--feed-sink file needs --feed-dir DIR"}},
		{[]string{"tail", "--feed-source", "file"}, nil,
			[]string{"--feed-source file needs --feed-dir DIR"}},
		{[]string{"kv", "put", "--db", db, "--artifact-store", "gcs", "k", "v"}, nil,
			[]string{`--artifact-store "gcs" (or CONTROLFEED_ARTIFACT_STORE): want one of file, jetstream`}},
	} {
		out, code := runBinary(t, tc.env, "", tc.args...)
		wantRefused(t, out, code, 2, tc.want...)
		for _, lib := range []string{"forgotten import", "feed.SourceConfig", "FileDir"} {
			if strings.Contains(out, lib) {
				t.Errorf("controlfeed %s: the error speaks of %q, a library detail:\n%s", strings.Join(tc.args, " "), lib, out)
			}
		}
	}
	assertUnchanged(t, dir, before)
}

// nats-server's --listen has its own variable: the HTTP listener's
// CONTROLFEED_LISTEN, set for a serve in the same environment, is not it.
func TestMisuse_NATSServerListenVariable(t *testing.T) {
	help, _ := runBinary(t, nil, "", "nats-server", "--help")
	if !strings.Contains(help, "env CONTROLFEED_NATS_SERVER_LISTEN") || strings.Contains(help, "env CONTROLFEED_LISTEN") {
		t.Errorf("nats-server --help does not give --listen its own variable:\n%s", help)
	}
	var stdout syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env := []string{"CONTROLFEED_LISTEN=127.0.0.1:1", "CONTROLFEED_NATS_SERVER_LISTEN=127.0.0.1:0"}
	done := make(chan error, 1)
	go func() {
		m := &Main{Stdout: &stdout, Environ: func() []string { return env }}
		done <- m.Run(ctx, []string{"nats-server", "--store", t.TempDir()})
	}()
	select {
	case err := <-done:
		t.Fatalf("nats-server with CONTROLFEED_NATS_SERVER_LISTEN=127.0.0.1:0 exited: %v", err)
	case <-waitChan(func() bool { return strings.Contains(stdout.String(), "nats-server ready: ") }):
	}
	if out := stdout.String(); strings.Contains(out, ":1\n") || strings.Contains(out, ":4222\n") {
		t.Errorf("nats-server did not listen on CONTROLFEED_NATS_SERVER_LISTEN's random port: %s", out)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("nats-server: %v", err)
	}
}

// waitChan is closed once cond holds (polled, no deadline: the test's
// timeout bounds it).
func waitChan(cond func() bool) <-chan struct{} {
	c := make(chan struct{})
	go func() {
		for !cond() {
			time.Sleep(10 * time.Millisecond)
		}
		close(c)
	}()
	return c
}

// kv delete accepts kv put's flags, so one set of flags serves both.
func TestMisuse_KVDeleteTakesPutFlags(t *testing.T) {
	_, db := producerDir(t)
	args := []string{"kv", "delete", "--db", db, "--artifact-store", "file", "--artifact-dir", db + ".artifacts",
		"--max-artifact-bytes", "1024", "--nats-url", "nats://127.0.0.1:1", "--nats-bucket", "b", "--nats-replicas", "1", "seed"}
	if out, code := runBinary(t, nil, "", args...); code != 0 || !strings.Contains(out, "-") {
		t.Errorf("kv delete with kv put's flags: exit %d, want 0 and the event id\n%s", code, out)
	}
	out, _ := runBinary(t, nil, "", "kv", "get", "--db", db, "seed")
	if !strings.Contains(out, "no such key") {
		t.Errorf("the key survived kv delete: %s", out)
	}
}

// writeFeed appends n events to a new file feed in dir and returns its
// directory.
func writeFeed(t *testing.T, dir string, n int) string {
	t.Helper()
	feedDir := filepath.Join(dir, "feed")
	sink, err := feed.OpenSink(filesource.Name, feed.SourceConfig{FileDir: feedDir})
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(sink)
	for i := range n {
		ev := controlevent.Event{EventID: controlevent.NewEventID(), Type: kv.TypeDelete, Key: fmt.Sprint("k", i),
			Version: 1, CreatedAt: time.Now()}
		if _, err := sink.Append(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	return feedDir
}

// tail --from past the feed's newest event says so (and is no retention
// problem); --from before a pruned feed's oldest event says which --from
// works, in tail's words, not a node's.
func TestMisuse_TailFrom(t *testing.T) {
	dir := t.TempDir()
	feedDir := writeFeed(t, dir, 3)
	before := treeDigest(t, dir)
	out, code := runBinary(t, nil, "", "tail", "--feed-source", "file", "--feed-dir", feedDir, "--from", "10", "--follow=false")
	wantRefused(t, out, code, 0, "--from 10 is past the feed's newest event 3: nothing to print")
	if strings.Contains(out, "retention") {
		t.Errorf("tail --from past the head speaks of retention:\n%s", out)
	}
	assertUnchanged(t, dir, before)

	if _, err := filesource.Prune(context.Background(), feedDir, 2, nil); err != nil {
		t.Fatal(err)
	}
	before = treeDigest(t, dir)
	out, code = runBinary(t, nil, "", "tail", "--feed-source", "file", "--feed-dir", feedDir, "--from", "1", "--follow=false")
	wantRefused(t, out, code, 1, "--from 1 is behind the feed's retention: the oldest event it holds is 3; run with --from 2 or more")
	if strings.Contains(out, "re-bootstrap this node") {
		t.Errorf("tail's retention error gives a node's advice:\n%s", out)
	}
	assertUnchanged(t, dir, before)
}

// The jetstream backends' default server is shown in help and logged when
// used.
func TestMisuse_NATSURLDefault(t *testing.T) {
	help, _ := runBinary(t, nil, "", "serve", "--help")
	if !strings.Contains(help, "env CONTROLFEED_NATS_URL, default nats://127.0.0.1:4222") {
		t.Errorf("serve --help does not show --nats-url's default:\n%s", help)
	}
	out, _ := runBinary(t, nil, "", "tail", "--feed-source", "jetstream", "--follow=false")
	if !strings.Contains(out, "no --nats-url given: connecting to the default NATS server") ||
		!strings.Contains(out, "nats_url=nats://127.0.0.1:4222") {
		t.Errorf("tail on jetstream without --nats-url does not log the default server:\n%s", out)
	}
}

// The crash tests' failure-point variables are not in the help, and still
// accepted.
func TestMisuse_HelpHidesTestVariables(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"serve", "--help"}} {
		out, _ := runBinary(t, nil, "", args...)
		for _, v := range []string{failpoint.EnvSpec, failpoint.EnvLog} {
			if strings.Contains(out, v) {
				t.Errorf("controlfeed %s shows the test-only variable %s", strings.Join(args, " "), v)
			}
		}
	}
	_, db := producerDir(t)
	env := []string{failpoint.EnvSpec + "=", failpoint.EnvLog + "=" + filepath.Join(t.TempDir(), "fp.log")}
	if out, code := runBinary(t, env, "", "kv", "get", "--db", db, "seed"); code != 0 {
		t.Errorf("with %s set: exit %d\n%s", failpoint.EnvSpec, code, out)
	}
}

// Each log line names its component once.
func TestMisuse_LogKeysOnce(t *testing.T) {
	dir := t.TempDir()
	// An event of no known type halts the applier, which logs it.
	sink, err := feed.OpenSink(filesource.Name, feed.SourceConfig{FileDir: filepath.Join(dir, "feed")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Append(context.Background(), controlevent.Event{EventID: "evt-bad", Type: "no.such.type", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	closeQuietly(sink)
	var stderr syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 2)
	// A producer and a node: one database cannot be both.
	for _, role := range [][]string{{"p.db", "--feed-sink"}, {"n.db", "--feed-source"}} {
		go func() {
			m := &Main{Stderr: &stderr}
			done <- m.Run(ctx, []string{"serve", "--db", filepath.Join(dir, role[0]), role[1], "file",
				"--feed-dir", filepath.Join(dir, "feed")})
		}()
	}
	waitFor(t, 30*time.Second, "the pump and the applier to start", func() bool {
		s := stderr.String()
		return strings.Contains(s, "outbox pump started") && strings.Contains(s, "component=applier")
	})
	cancel()
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	for line := range strings.SplitSeq(stderr.String(), "\n") {
		if strings.Count(line, "component=") > 1 {
			t.Errorf("log line repeats a key: %s", line)
		}
	}
}

// A node halted because it cannot read the payload the producer stored (a
// wrong artifact directory, a lower --max-artifact-bytes) is told to fix its
// configuration, not to skip, which would diverge it.
func TestMisuse_StatusAdviceForOwnConfiguration(t *testing.T) {
	for _, tc := range []struct {
		name     string
		maxBytes int64
		store    bool // the node's store holds the payload
		want     string
	}{
		{"WrongArtifactDir", 0, false, "this node's artifact store does not hold the event's payload: check that serve's --artifact-store and --artifact-dir"},
		{"LowerLimit", 2, true, "larger than this node's --max-artifact-bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			feedDir := filepath.Join(dir, "feed")
			artDir := filepath.Join(dir, "node-artifacts")
			payload := []byte("value")
			if tc.store {
				st, err := filestore.New(artDir, nil)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := artifact.PutBytes(context.Background(), st, payload); err != nil {
					t.Fatal(err)
				}
			}
			sink, err := feed.OpenSink(filesource.Name, feed.SourceConfig{FileDir: feedDir})
			if err != nil {
				t.Fatal(err)
			}
			ref := artifact.RefOf(payload)
			ev := controlevent.Event{EventID: "evt-1", Type: kv.TypePut, Key: "k", Version: 1, ArtifactRef: ref,
				Checksum: ref, CreatedAt: time.Now()}
			if _, err := sink.Append(context.Background(), ev); err != nil {
				t.Fatal(err)
			}
			closeQuietly(sink)

			db := filepath.Join(dir, "n.db")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			n, err := node.Open(ctx, &node.Config{DB: db, FeedSource: filesource.Name, Feed: feed.SourceConfig{FileDir: feedDir},
				Artifact: artifact.Config{Dir: artDir}, MaxArtifactBytes: tc.maxBytes})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- n.Run(ctx) }()
			waitFor(t, 30*time.Second, "the node to halt", func() bool {
				var st map[string]any
				out, _ := runBinary(t, nil, "", "status", "--db", db, "--json")
				return json.Unmarshal([]byte(out), &st) == nil && st["halted"] != nil
			})
			cancel()
			<-done
			n.Close()

			out, code := runBinary(t, nil, "", "status", "--db", db)
			wantRefused(t, out, code, 0, tc.want, "Do not skip")
			if strings.Contains(out, "controlfeed skip") {
				t.Errorf("status suggests a skip for the node's own configuration:\n%s", out)
			}
		})
	}
}

// Every command is in the README's command table.
func TestMisuse_READMEListsEveryCommand(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, c := range commands {
		if !strings.Contains(readme, "| `"+c.name) && !strings.Contains(readme, "/ `"+c.name) {
			t.Errorf("README's command table does not list %q", c.name)
		}
	}
	if !strings.Contains(readme, "controlfeed-chaos") {
		t.Error("README does not document controlfeed-chaos")
	}
}
