package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/dbrole"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/kv"
)

// roleDBs makes, in a fresh directory, a producer's database and a node's
// database as serve leaves them (each opened once in its role and closed),
// with key "k" in both, a feed directory and an artifact directory.
type roleDBs struct {
	dir, producer, node, feedDir, artifactDir string
}

func newRoleDBs(t *testing.T) roleDBs {
	t.Helper()
	dir := t.TempDir()
	r := roleDBs{dir: dir, producer: filepath.Join(dir, "producer.db"), node: filepath.Join(dir, "node.db"),
		feedDir: filepath.Join(dir, "feed"), artifactDir: filepath.Join(dir, "artifacts")}
	if err := os.MkdirAll(r.feedDir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	store, err := artifact.Open("file", artifact.Config{Dir: r.artifactDir})
	if err != nil {
		t.Fatal(err)
	}
	defer closeStore(store)
	for _, db := range []string{r.producer, r.node} {
		sdb, err := node.OpenDB(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		_, err = kv.Put(ctx, sdb, store, "k", []byte("v"))
		sdb.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	fcfg := feed.SourceConfig{FileDir: r.feedDir}
	art := artifact.Config{Dir: r.artifactDir}
	for _, cfg := range []*node.Config{
		{DB: r.producer, FeedSink: "file", Feed: fcfg, Artifact: art},
		{DB: r.node, FeedSource: "file", Feed: fcfg, Artifact: art},
	} {
		n, err := node.Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// assertRefused checks a refused command's exit code and that its output
// holds every one of want.
func assertRefused(t *testing.T, out string, code, wantCode int, want ...string) {
	t.Helper()
	if code != wantCode {
		t.Errorf("exit code %d, want %d; output:\n%s", code, wantCode, out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output does not say %q:\n%s", w, out)
		}
	}
}

func TestMisuse_KVWriteOnNodeDB(t *testing.T) {
	for _, args := range [][]string{
		{"kv", "put", "--artifact-dir", "ARTIFACTS", "k", "local"},
		{"kv", "put", "--artifact-dir", "ARTIFACTS", "new-key", "local"},
		{"kv", "delete", "k"},
		{"kv", "delete", "no-such-key"},
	} {
		t.Run(strings.Join(args[:2], "_")+"_"+args[len(args)-2+len(args)%2], func(t *testing.T) {
			r := newRoleDBs(t)
			before := treeDigest(t, r.dir)
			args = append([]string{args[0], args[1], "--db", r.node}, args[2:]...)
			for i := range args {
				if args[i] == "ARTIFACTS" {
					args[i] = r.artifactDir
				}
			}
			out, code := runBinary(t, nil, "", args...)
			assertRefused(t, out, code, 1, "refused", r.node+" is a node's database", "never be published",
				"--db set to the producer's database")
			assertUnchanged(t, r.dir, before)
		})
	}
}

func TestMisuse_KVLibraryWriteOnNodeDB(t *testing.T) {
	r := newRoleDBs(t)
	ctx := context.Background()
	before := treeDigest(t, r.dir)
	db, err := node.OpenDB(ctx, r.node)
	if err != nil {
		t.Fatal(err)
	}
	store, err := artifact.Open("file", artifact.Config{Dir: r.artifactDir})
	if err != nil {
		t.Fatal(err)
	}
	_, perr := kv.Put(ctx, db, store, "k", []byte("local"))
	_, _, derr := kv.Delete(ctx, db, "k")
	closeStore(store)
	db.Close()
	for name, err := range map[string]error{"Put": perr, "Delete": derr} {
		if !errors.Is(err, dbrole.ErrNodeDatabase) || !strings.Contains(err.Error(), "write on the producer's database") ||
			!strings.HasPrefix(err.Error(), `kv: `) {
			t.Errorf("kv.%s on a node's database: %v, want dbrole.ErrNodeDatabase saying what to do", name, err)
		}
	}
	assertUnchanged(t, r.dir, before)

	// The producer's database still takes writes.
	out, code := runBinary(t, nil, "", "kv", "put", "--db", r.producer, "--artifact-dir", r.artifactDir, "k", "v2")
	if code != 0 {
		t.Errorf("kv put on the producer's database: exit %d\n%s", code, out)
	}
}

func TestMisuse_ServeInTheOtherRole(t *testing.T) {
	r := newRoleDBs(t)
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"NodeOnProducerDB", []string{"serve", "--db", r.producer, "--feed-source", "file"},
			[]string{"recorded as a producer's database and cannot be opened as a node's", "DELETE FROM controlfeed_role"}},
		{"ProducerOnNodeDB", []string{"serve", "--db", r.node, "--feed-sink", "file"},
			[]string{"recorded as a node's database and cannot be opened as a producer's", "DELETE FROM controlfeed_role"}},
		{"BothOnOneDB", []string{"serve", "--db", filepath.Join(r.dir, "new.db"), "--feed-source", "file", "--feed-sink", "file"},
			[]string{"not both", "two processes with two databases"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := treeDigest(t, r.dir)
			out, code := runBinary(t, nil, "", append(tc.args, "--feed-dir", r.feedDir, "--artifact-dir", r.artifactDir,
				"--listen", "127.0.0.1:0")...)
			assertRefused(t, out, code, 1, tc.want...)
			assertUnchanged(t, r.dir, before)
		})
	}
}

// startProducer starts "controlfeed serve" with a file sink on db as a
// process and waits until it holds the pump lock.
func startProducer(t *testing.T, db, feedDir string) *exec.Cmd {
	t.Helper()
	return startProducerWith(t, db, feedDir)
}

// startProducerWith is startProducer with more flags.
func startProducerWith(t *testing.T, db, feedDir string, flags ...string) *exec.Cmd {
	t.Helper()
	var logs syncBuffer
	cmd := exec.Command(binary, append([]string{"serve", "--db", db, "--feed-sink", "file", "--feed-dir", feedDir, "--poll-interval", "50ms"}, flags...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	want := fmt.Sprintf("pid %d on host", cmd.Process.Pid)
	waitFor(t, time.Minute, "the producer to hold the pump lock", func() bool {
		select {
		case <-exited:
			t.Fatalf("producer exited:\n%s", logs.String())
		default:
		}
		b, _ := os.ReadFile(db + node.PumpLockSuffix)
		return strings.Contains(string(b), want) && strings.Contains(logs.String(), "controlfeed node starting")
	})
	return cmd
}

func TestMisuse_SecondPump(t *testing.T) {
	if binary == "" {
		t.Skip("needs the controlfeed binary; not built with -short")
	}
	r := newRoleDBs(t)
	r.producer = filepath.Join(r.dir, "idle-producer.db") // nothing to publish: the first pump writes nothing once started
	first := startProducer(t, r.producer, r.feedDir)
	host, _ := os.Hostname()
	lock := r.producer + node.PumpLockSuffix
	digests := func() map[string]map[string]string {
		return map[string]map[string]string{r.producer: treeDigest(t, r.producer), lock: treeDigest(t, lock), r.feedDir: treeDigest(t, r.feedDir)}
	}
	before := digests()
	waitFor(t, time.Minute, "the first producer to settle", func() bool {
		time.Sleep(200 * time.Millisecond)
		now := digests()
		if fmt.Sprint(now) == fmt.Sprint(before) {
			return true
		}
		before = now
		return false
	})
	out, code := runBinary(t, nil, "", "serve", "--db", r.producer, "--feed-sink", "file", "--feed-dir", r.feedDir)
	assertRefused(t, out, code, 1, "already has a running pump",
		fmt.Sprintf("pid %d on host %s", first.Process.Pid, host), "stop that process first")
	for path, d := range before {
		assertUnchanged(t, path, d)
	}

	// SIGKILL leaves no stale lock: the kernel drops the flock.
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the killed producer to exit", func() bool {
		return first.Process.Signal(syscall.Signal(0)) != nil
	})
	second := startProducer(t, r.producer, r.feedDir)
	if err := second.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
}
