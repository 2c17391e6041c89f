package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/trust"
	_ "modernc.org/sqlite"
)

// The snapshot commands sign with --snapshot-signing-key and verify with
// --trust-key: a verifying restore takes only a snapshot signed by a
// trusted key, with the chain head it covers, and names the reason, the
// snapshot and the key otherwise; serve refuses to publish snapshots a
// verifying fleet could not restore.
func TestSnapshotCLI_Signed(t *testing.T) {
	dir := t.TempDir()
	feedDir, art := filepath.Join(dir, "feed"), filepath.Join(dir, "art")
	if err := os.Mkdir(feedDir, 0o755); err != nil {
		t.Fatal(err)
	}
	env := []string{"CONTROLFEED_ARTIFACT_DIR=" + art, "CONTROLFEED_FEED_DIR=" + feedDir}
	keys := func(name string) keyInfo {
		out := mustRun(t, nil, "", "keys", "generate", "--out", dir, "--name", name, "--json")
		var k keyInfo
		if err := json.Unmarshal([]byte(out), &k); err != nil {
			t.Fatal(err)
		}
		return k
	}
	snapKey, other := keys("snap"), keys("other")
	n1 := filepath.Join(dir, "n1.db")
	makeNodeDB(t, n1, 5, 5)
	want := trust.Head{Seq: 5, Digest: "sha256:" + strings.Repeat("ab", 32)}
	raw, err := sql.Open("sqlite", n1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`UPDATE controlfeed_cursor SET trust_seq = ?, trust_digest = ? WHERE id = 1`, want.Seq, want.Digest); err != nil {
		t.Fatal(err)
	}
	raw.Close()

	// Unsigned, then refused by a verifying restore.
	mustRun(t, env, "", "snapshot", "publish", "--db", n1, "--feed-source", "file")
	_, _, err = run(t, env, "", "snapshot", "restore", "--db", filepath.Join(dir, "a.db"), "--latest", "--feed-source", "file", "--trust-key", snapKey.PublicFile)
	if err == nil || !strings.Contains(err.Error(), "(unsigned;") || !strings.Contains(err.Error(), "--trust-key") {
		t.Fatalf("verifying restore of an unsigned snapshot: %v", err)
	}

	// Signed: a stranger's key is refused by name, the right one restores.
	out := mustRun(t, env, "", "snapshot", "publish", "--db", n1, "--feed-source", "file", "--snapshot-signing-key", snapKey.SecretFile)
	if !strings.Contains(out, "published snapshot") {
		t.Fatalf("publish: %s", out)
	}
	_, _, err = run(t, env, "", "snapshot", "restore", "--db", filepath.Join(dir, "b.db"), "--latest", "--feed-source", "file", "--trust-key", other.PublicFile)
	if err == nil || !strings.Contains(err.Error(), "unknown-key") || !strings.Contains(err.Error(), snapKey.KeyID) {
		t.Fatalf("restore trusting another key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "b.db")); err == nil {
		t.Fatal("a refused restore created the database")
	}
	target := filepath.Join(dir, "c.db")
	mustRun(t, env, "", "snapshot", "restore", "--db", target, "--latest", "--feed-source", "file", "--trust-key", snapKey.PublicFile)
	db, err := sql.Open("sqlite", target)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got, err := applier.ReadTrustHead(context.Background(), db); err != nil || got != want {
		t.Fatalf("restored chain head %+v (%v), want %+v", got, err, want)
	}

	// serve: a verifying node publishing snapshots needs a trusted key.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--trust-key", snapKey.PublicFile}, "no --snapshot-signing-key"},
		{[]string{"--trust-key", other.PublicFile, "--snapshot-signing-key", snapKey.SecretFile}, "not among this node's --trust-key keys"},
	} {
		args := append([]string{"serve", "--db", filepath.Join(dir, "s.db"), "--feed-source", "file", "--snapshot-every", "10"}, c.args...)
		if _, _, err := run(t, env, "", args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error saying %q", args, err, c.want)
		}
	}
}
