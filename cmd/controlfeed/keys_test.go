package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
