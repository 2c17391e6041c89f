package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/outbox"
)

func TestKeys_GenerateAndShow(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	out := mustRun(t, nil, "", "keys", "generate", "--out", dir, "--name", "p1", "--json")
	var info keyInfo
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, f := range []string{info.SecretFile, info.PublicFile} {
		fi, err := os.Stat(f)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v mode %v, want 0600", f, err, fi.Mode().Perm())
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("key directory mode %v, want 0700", fi.Mode().Perm())
	}
	secret, _ := os.ReadFile(info.SecretFile)
	seedLine := strings.Split(string(secret), "\n")[2]
	for _, f := range []string{info.SecretFile, info.PublicFile} {
		show := mustRun(t, nil, "", "keys", "show", f)
		if !strings.Contains(show, info.KeyID) || !strings.Contains(show, info.TrustSpec) || strings.Contains(show, seedLine[6:]) {
			t.Errorf("keys show %s:\n%s", f, show)
		}
	}
	if strings.Contains(out, seedLine[6:]) {
		t.Fatal("keys generate printed the private key")
	}
	// Never overwrites.
	_, _, err := run(t, nil, "", "keys", "generate", "--out", dir, "--name", "p1")
	if err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second generate = %v", err)
	}
	if b, _ := os.ReadFile(info.SecretFile); string(b) != string(secret) {
		t.Fatal("the key file changed")
	}
	for _, args := range [][]string{{"keys", "generate"}, {"keys", "generate", "--out", dir, "--name", "../x"}, {"keys"}, {"keys", "rotate"}, {"keys", "show"}} {
		if _, _, err := run(t, nil, "", args...); !isUsage(err) {
			t.Errorf("%v = %v, want a usage error", args, err)
		}
	}
}

func TestServe_TrustFlags(t *testing.T) {
	dir := t.TempDir()
	out := mustRun(t, nil, "", "keys", "generate", "--out", dir, "--json")
	var info keyInfo
	json.Unmarshal([]byte(out), &info)
	loose := filepath.Join(dir, "loose.key")
	b, _ := os.ReadFile(info.SecretFile)
	os.WriteFile(loose, b, 0o644)
	db := filepath.Join(dir, "x.db")
	feedDir := filepath.Join(dir, "feed")
	cases := []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"--feed-sink", "file", "--feed-dir", feedDir, "--signing-key", loose}, nil, "must not be readable by group or others"},
		{[]string{"--feed-sink", "file", "--feed-dir", feedDir, "--signing-key", info.PublicFile}, nil, "is a public key"},
		{[]string{"--feed-sink", "file", "--feed-dir", feedDir, "--signing-key", filepath.Join(dir, "none.key")}, nil, "no such file"},
		{[]string{"--feed-source", "file", "--feed-dir", feedDir, "--trust-key", info.SecretFile}, nil, "this is a private key file"},
		{[]string{"--feed-source", "file", "--feed-dir", feedDir, "--trust-key", "ed25519:0000000000000000=" + strings.SplitN(info.TrustSpec, "=", 2)[1]}, nil, "wrong id or wrong key"},
		{[]string{"--feed-source", "file", "--feed-dir", feedDir}, []string{"CONTROLFEED_TRUST_KEY=" + filepath.Join(dir, "missing.pub")}, "missing.pub: no such file"},
		{[]string{"--feed-source", "file", "--feed-dir", feedDir, "--signing-key", info.SecretFile}, nil, "only a producer signs"},
		{[]string{"--feed-sink", "file", "--feed-dir", feedDir, "--trust-key", info.PublicFile}, nil, "only a node verifies"},
		// An empty entry would leave the node trusting nothing: no verification.
		{[]string{"--feed-source", "file", "--feed-dir", feedDir, "--trust-key", ""}, nil, "the value is empty"},
		{[]string{"--feed-source", "file", "--feed-dir", feedDir, "--trust-key", " , "}, nil, "entry 1 of 2 is empty"},
		{[]string{"--feed-source", "file", "--feed-dir", feedDir, "--trust-key", info.PublicFile + ","}, nil, "entry 2 of 2 is empty"},
		{[]string{"--feed-source", "file", "--feed-dir", feedDir}, []string{"CONTROLFEED_TRUST_KEY="}, "verifies nothing"},
	}
	for _, c := range cases {
		_, _, err := run(t, c.env, "", append([]string{"serve", "--db", db}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("serve %v: %v, want an error saying %q", c.args, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), strings.Split(string(b), "\n")[2][6:]) {
			t.Errorf("the error shows the private key: %v", err)
		}
	}
}

// TestServe_RefusesRevokedSigningKey: after "keys revoke" of its key, a
// producer restarted on that key refuses to start (the fleet would halt
// at its next event), naming the revocation; with the new key it starts
// and publishes; an announcement of the old key after the revocation
// makes it usable again.
func TestServe_RefusesRevokedSigningKey(t *testing.T) {
	dir := t.TempDir()
	keys := map[string]keyInfo{}
	for _, name := range []string{"old", "new"} {
		var info keyInfo
		if err := json.Unmarshal([]byte(mustRun(t, nil, "", "keys", "generate", "--out", filepath.Join(dir, "keys"), "--name", name, "--json")), &info); err != nil {
			t.Fatal(err)
		}
		keys[name] = info
	}
	feedDir := filepath.Join(dir, "feed")
	env := []string{"CONTROLFEED_ARTIFACT_DIR=" + filepath.Join(dir, "art"), "CONTROLFEED_POLL_INTERVAL=20ms"}
	db := filepath.Join(dir, "producer.db")
	mustRun(t, env, "", "kv", "put", "--db", db, "a", "1")
	revoke := strings.TrimSpace(mustRun(t, env, "", "keys", "revoke", "--db", db, keys["old"].KeyID))
	serve := func(key string) (context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			m := &Main{Environ: func() []string { return env }, Stdout: io.Discard, Stderr: io.Discard}
			done <- m.Run(ctx, []string{"serve", "--db", db, "--feed-sink", "file", "--feed-dir", feedDir, "--signing-key", key})
		}()
		return cancel, done
	}
	cancel, done := serve(keys["old"].SecretFile)
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "signing key is revoked") || !strings.Contains(err.Error(), revoke) {
			t.Fatalf("serve on the revoked key: %v; want a refusal naming the revocation event %s", err, revoke)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve on the revoked key did not refuse to start within 30s")
	}
	cancel()
	cancel, done = serve(keys["new"].SecretFile)
	waitFor(t, 30*time.Second, "the new key's producer to publish both events", func() bool {
		out, _, err := run(t, nil, "", "tail", "--follow=false", "--feed-dir", feedDir)
		return err == nil && strings.Count(out, "\n") == 2
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve on the new key: %v", err)
	}
	mustRun(t, env, "", "keys", "announce", "--db", db, keys["old"].PublicFile)
	if err := outbox.CheckSigner(context.Background(), openTestDB(t, context.Background(), db), keys["old"].KeyID); err != nil {
		t.Errorf("after announcing the old key again: %v; want it usable", err)
	}
}

// TestKeysRevoke_Guards: "keys revoke" refuses the key that signed the
// pump's last published event (the fleet would halt at the pump's next
// event), queuing nothing, unless --force; it notes an id that nothing in
// the outbox names (a typo revokes nothing), and revokes it.
func TestKeysRevoke_Guards(t *testing.T) {
	dir := t.TempDir()
	var info keyInfo
	if err := json.Unmarshal([]byte(mustRun(t, nil, "", "keys", "generate", "--out", filepath.Join(dir, "keys"), "--json")), &info); err != nil {
		t.Fatal(err)
	}
	feedDir := filepath.Join(dir, "feed")
	env := []string{"CONTROLFEED_ARTIFACT_DIR=" + filepath.Join(dir, "art"), "CONTROLFEED_POLL_INTERVAL=20ms"}
	db := filepath.Join(dir, "producer.db")
	mustRun(t, env, "", "kv", "put", "--db", db, "a", "1")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		m := &Main{Environ: func() []string { return env }, Stdout: io.Discard, Stderr: io.Discard}
		done <- m.Run(ctx, []string{"serve", "--db", db, "--feed-sink", "file", "--feed-dir", feedDir, "--signing-key", info.SecretFile})
	}()
	waitFor(t, 30*time.Second, "the producer to publish its signed event", func() bool {
		out, _, err := run(t, nil, "", "tail", "--follow=false", "--feed-dir", feedDir)
		return err == nil && strings.Count(out, "\n") == 1
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	pending := func() int {
		var n int
		if err := openTestDB(t, context.Background(), db).QueryRow(`SELECT COUNT(*) FROM controlfeed_outbox WHERE type = 'controlfeed.trust.revoke_key'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	_, _, err := run(t, env, "", "keys", "revoke", "--db", db, info.KeyID)
	if err == nil || !strings.Contains(err.Error(), "refused: the pump signed its last published event (chain seq 1) with this key") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("revoke of the pump's signing key = %v; want a refusal naming --force", err)
	}
	if n := pending(); n != 0 {
		t.Fatalf("the refused revocation queued %d rows", n)
	}
	mustRun(t, env, "", "keys", "revoke", "--db", db, "--force", info.KeyID)
	if n := pending(); n != 1 {
		t.Fatalf("revoke --force queued %d rows, want 1", n)
	}
	// A typo: noted, and queued (a key trusted only through --trust-key is
	// named by nothing in the outbox either).
	typo := "ed25519:0000000000000000"
	_, errOut, err := run(t, env, "", "keys", "revoke", "--db", db, typo)
	if err != nil || !strings.Contains(errOut, "note: no event in this outbox announces or revokes "+typo) {
		t.Fatalf("revoke of an unknown id = %v, stderr %q; want success with a note", err, errOut)
	}
	// Revoked once already: it is named by a key event now, no note.
	if _, errOut, err := run(t, env, "", "keys", "revoke", "--db", db, typo); err != nil || strings.Contains(errOut, "note:") {
		t.Fatalf("second revoke of %s = %v, stderr %q", typo, err, errOut)
	}
}
