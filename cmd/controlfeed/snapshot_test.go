package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/filestore"
	"github.com/controlfeed/controlfeed/dbrole"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/snapshot"
)

// makeNodeDB creates a node database at path with cursor cv and n kv rows,
// recorded in the node role, as a node that applied a feed would leave it.
func makeNodeDB(t *testing.T, path string, cv uint64, n int) {
	t.Helper()
	ctx := context.Background()
	db, err := node.OpenDB(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := dbrole.Record(ctx, db, dbrole.Node); err != nil {
		t.Fatal(err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := tx.Exec(`INSERT INTO controlfeed_kv (key, value, version, updated_at) VALUES (?, ?, ?, ?)`,
			fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i), i+1, "2026-01-01T00:00:00Z"); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(`INSERT INTO controlfeed_applied_events (event_id, control_version, type, applied_at, outcome) VALUES (?, ?, 'kv.put', 'x', 'applied')`,
			fmt.Sprintf("e%d", i), i+1); err != nil {
			t.Fatal(err)
		}
	}
	if err := applier.SetCursor(ctx, tx, cv); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// The snapshot commands through the real binary on a file feed: create,
// publish, list, restore, their --json output, and their refusals with
// exit status and message.
func TestSnapshotCLI_FileFeed(t *testing.T) {
	dir := t.TempDir()
	feedDir, art := filepath.Join(dir, "feed"), filepath.Join(dir, "art")
	if err := os.Mkdir(feedDir, 0o755); err != nil {
		t.Fatal(err)
	}
	env := []string{"CONTROLFEED_ARTIFACT_DIR=" + art, "CONTROLFEED_FEED_DIR=" + feedDir}
	n1 := filepath.Join(dir, "n1.db")
	makeNodeDB(t, n1, 5, 5)

	expect := func(wantCode int, wantOut string, args ...string) string {
		t.Helper()
		out, code := runBinary(t, env, "", args...)
		if code != wantCode || !strings.Contains(out, wantOut) {
			t.Fatalf("controlfeed %s: exit %d, want %d with %q; output:\n%s", strings.Join(args, " "), code, wantCode, wantOut, out)
		}
		return out
	}

	// Nothing published yet.
	expect(0, "no snapshot published", "snapshot", "list", "--feed-source", "file")
	expect(1, "no snapshot published", "snapshot", "restore", "--db", filepath.Join(dir, "x.db"), "--latest", "--feed-source", "file")

	// create prints the manifest reference; --json the manifest.
	before := treeDigest(t, n1)
	out := expect(0, "sha256:", "snapshot", "create", "--db", n1)
	ref := strings.TrimSpace(strings.SplitN(out, "\n", 2)[0])
	assertUnchanged(t, n1, before)
	var man struct {
		Ref            string `json:"ref"`
		ControlVersion uint64 `json:"control_version"`
		AppliedEvents  int64  `json:"applied_events"`
	}
	out = expect(0, `"kind": "controlfeed.snapshot"`, "snapshot", "create", "--db", n1, "--json")
	if err := json.Unmarshal([]byte(out), &man); err != nil || man.ControlVersion != 5 || man.AppliedEvents != 5 || man.Ref == "" {
		t.Fatalf("create --json = %s (%v)", out, err)
	}

	// publish, list, restore --latest into a new database.
	expect(0, "published snapshot", "snapshot", "publish", "--db", n1, "--feed-source", "file")
	out = expect(0, "CURSOR", "snapshot", "list", "--feed-source", "file")
	if !strings.Contains(out, "\n5 ") {
		t.Fatalf("snapshot list:\n%s", out)
	}
	var recs []snapshot.Record
	out = expect(0, "[", "snapshot", "list", "--feed-source", "file", "--json")
	if err := json.Unmarshal([]byte(out), &recs); err != nil || len(recs) != 1 || recs[0].ControlVersion != 5 {
		t.Fatalf("list --json = %s (%v)", out, err)
	}
	if _, err := os.Stat(filepath.Join(feedDir, ".snapshots", "latest.json")); err != nil {
		t.Fatalf("the file feed's latest snapshot is not where the docs say: %v", err)
	}
	n2 := filepath.Join(dir, "n2.db")
	expect(0, "restored snapshot", "snapshot", "restore", "--db", n2, "--latest", "--feed-source", "file")
	if got := mustRun(t, nil, "", "kv", "get", "--db", n2, "k3"); got != "v3\n" {
		t.Fatalf("restored kv get k3 = %q", got)
	}
	// --ref, --json.
	n3 := filepath.Join(dir, "n3.db")
	expect(0, `"control_version": 5`, "snapshot", "restore", "--db", n3, "--ref", ref, "--json")

	// An older snapshot cannot become the latest.
	old := filepath.Join(dir, "old.db")
	makeNodeDB(t, old, 2, 2)
	expect(1, "older than the latest published one", "snapshot", "publish", "--db", old, "--feed-source", "file")

	// A populated database is replaced only with --force.
	expect(1, "add --force", "snapshot", "restore", "--db", n2, "--ref", ref)
	expect(0, "restored snapshot", "snapshot", "restore", "--db", n2, "--ref", ref, "--force")

	// Usage errors: exit 2.
	expect(2, "exactly one of --ref REF and --latest", "snapshot", "restore", "--db", n2)
	expect(2, "exactly one of --ref REF and --latest", "snapshot", "restore", "--db", n2, "--ref", ref, "--latest")
	expect(2, "--feed-source nop", "snapshot", "publish", "--db", n1, "--feed-source", "nop")
	expect(2, "--feed-source nop", "snapshot", "list", "--feed-source", "nop")
	// A feed directory alone (here CONTROLFEED_FEED_DIR) means the file
	// feed, as for tail.
	expect(0, "CURSOR", "snapshot", "list")
	expect(2, "unknown subcommand", "snapshot", "frobnicate")
	expect(2, "--bootstrap \"sometimes\"", "serve", "--db", filepath.Join(dir, "s.db"), "--feed-source", "file", "--bootstrap", "sometimes")

	// Wrong databases: missing, not controlfeed's, a producer's.
	expect(1, "no such file", "snapshot", "create", "--db", filepath.Join(dir, "missing.db"))
	other := filepath.Join(dir, "other.db")
	os.WriteFile(other, []byte("not a database at all, not even close"), 0o600)
	expect(1, "snapshot create", "snapshot", "create", "--db", other)
	prod := filepath.Join(dir, "producer.db")
	mustRun(t, env, "", "kv", "put", "--db", prod, "k", "v")
	expect(1, "is a producer's database", "snapshot", "create", "--db", prod)
	pbefore := treeDigest(t, prod)
	expect(1, "is a producer's database", "snapshot", "restore", "--db", prod, "--ref", ref, "--force")
	assertUnchanged(t, prod, pbefore)

	// Damaged and foreign snapshots are refused, changing nothing.
	store, err := filestore.New(art, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := snapshot.Load(context.Background(), store, ref)
	if err != nil {
		t.Fatal(err)
	}
	putManifest := func(edit func(map[string]any)) string {
		b, _ := m.Encode()
		var raw map[string]any
		json.Unmarshal(b, &raw)
		edit(raw)
		b, _ = json.Marshal(raw)
		r, err := artifact.PutBytes(context.Background(), store, b)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	n4 := filepath.Join(dir, "n4.db")
	expect(1, "format is 7, this program supports 1", "snapshot", "restore", "--db", n4,
		"--ref", putManifest(func(r map[string]any) { r["format"] = 7 }))
	expect(1, `schema "applier" version is 99`, "snapshot", "restore", "--db", n4,
		"--ref", putManifest(func(r map[string]any) { r["schemas"].(map[string]any)["applier"] = 99 }))
	expect(1, "not name a snapshot manifest", "snapshot", "restore", "--db", n4, "--ref", m.Database.Ref)
	// The database artifact damaged in the store.
	hex := strings.TrimPrefix(m.Database.Ref, "sha256:")
	obj := filepath.Join(art, "sha256", hex[:2], hex)
	b, err := os.ReadFile(obj)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(obj, 0o644)
	if err := os.WriteFile(obj, b[:len(b)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	expect(1, "the snapshot is damaged; nothing was changed", "snapshot", "restore", "--db", n4, "--ref", ref)
	if _, err := os.Stat(n4); !os.IsNotExist(err) {
		t.Fatalf("a refused restore left %s: %v", n4, err)
	}

	// Help.
	for _, sub := range []string{"create", "publish", "list", "restore"} {
		expect(0, "Usage: controlfeed snapshot "+sub, "snapshot", sub, "--help")
	}
	expect(0, "controlfeed snapshot restore", "snapshot", "--help")
	expect(0, "--bootstrap-when-behind", "serve", "--help")
}

// --out exports a standalone database and its manifest, storing nothing.
func TestSnapshotCLI_Export(t *testing.T) {
	dir := t.TempDir()
	n1 := filepath.Join(dir, "n1.db")
	makeNodeDB(t, n1, 3, 3)
	out := filepath.Join(dir, "copy.db")
	mustRun(t, nil, "", "snapshot", "create", "--db", n1, "--out", out, "--artifact-dir", filepath.Join(dir, "art"))
	if _, err := os.Stat(filepath.Join(dir, "art")); !os.IsNotExist(err) {
		t.Fatalf("--out stored something in the artifact store: %v", err)
	}
	b, err := os.ReadFile(out + ".manifest.json")
	if err != nil || !bytes.Contains(b, []byte(`"control_version": 3`)) {
		t.Fatalf("manifest file: %s (%v)", b, err)
	}
	if got := mustRun(t, nil, "", "kv", "get", "--db", out, "k1"); got != "v1\n" {
		t.Fatalf("kv get on the exported copy = %q", got)
	}
	if _, _, err := run(t, nil, "", "snapshot", "create", "--db", n1, "--out", out); err == nil {
		t.Fatal("--out over an existing file succeeded")
	}
}

// Restore refuses, even with --force, a database that a running node has
// open: replacing the file under it would leave the node writing to the
// old one.
func TestSnapshotCLI_RestoreInUse(t *testing.T) {
	if binary == "" {
		t.Skip("needs the controlfeed binary; not built with -short")
	}
	dir := t.TempDir()
	feedDir := filepath.Join(dir, "feed")
	os.Mkdir(feedDir, 0o755)
	env := []string{"CONTROLFEED_ARTIFACT_DIR=" + filepath.Join(dir, "art"), "CONTROLFEED_FEED_DIR=" + feedDir}
	n1 := filepath.Join(dir, "n1.db")
	makeNodeDB(t, n1, 4, 4)
	ref := strings.TrimSpace(strings.SplitN(mustRun(t, env, "", "snapshot", "create", "--db", n1), "\n", 2)[0])
	target := filepath.Join(dir, "running.db")
	makeNodeDB(t, target, 1, 1)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs syncBuffer
	cmd := exec.CommandContext(ctx, binary, "serve", "--db", target, "--feed-source", "file", "--node-name", "r")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}, env...)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	waitFor(t, 30*time.Second, "the node to start", func() bool { return strings.Contains(logs.String(), "controlfeed node starting") })
	time.Sleep(200 * time.Millisecond)

	out, code := runBinary(t, env, "", "snapshot", "restore", "--db", target, "--ref", ref, "--force")
	if code != 1 || !strings.Contains(out, "has the database open") || !strings.Contains(out, "stop the node") {
		t.Fatalf("restore over a running node's database: exit %d\n%s", code, out)
	}
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
	if out, code := runBinary(t, env, "", "snapshot", "restore", "--db", target, "--ref", ref, "--force"); code != 0 {
		t.Fatalf("restore once the node stopped: exit %d\n%s", code, out)
	}
}

func TestProgress_Lines(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(0, 0)
	p := &progress{w: &buf, prefix: "controlfeed snapshot create", now: func() time.Time { return now }}
	const mib = 1 << 20
	p.report("copy", 0, 100*mib)
	now = now.Add(500 * time.Millisecond)
	p.report("copy", 10*mib, 100*mib) // under a second: nothing
	now = now.Add(1500 * time.Millisecond)
	p.report("copy", 40*mib, 100*mib)
	now = now.Add(200 * time.Millisecond)
	p.report("copy", 45*mib, 100*mib) // within a second of the last line: nothing
	now = now.Add(2 * time.Second)
	p.report("copy", 100*mib, 100*mib)
	p.report("store", 1, 10) // a quick phase: nothing
	p.report("store", 10, 10)
	want := "controlfeed snapshot create: copy 40 MiB of 100 MiB (40%), 20 MiB/s, ETA 3s\n" +
		"controlfeed snapshot create: copy 100 MiB done in 4.2s (23.8 MiB/s)\n"
	if buf.String() != want {
		t.Fatalf("progress lines:\n%s\nwant:\n%s", buf.String(), want)
	}
}
