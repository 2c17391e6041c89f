package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/internal/natsembed"
)

// TestSecrets_NeverPrinted runs a producer, a node and every client command
// against a NATS server that requires a password, with the password given
// in the URL, in the environment, and (failing) in a creds file, plus the
// mistakes an operator makes (wrong port, unparsable URL, wrong password).
// No output, log line (at debug level), error, status or metrics page may
// contain the secret.
func TestSecrets_NeverPrinted(t *testing.T) {
	const secret = "S3cr3tPW"
	srv := natsembed.StartWithAuthForTest(t, "alice", secret)
	hostPort := strings.TrimPrefix(srv.ClientURL(), "nats://")
	dir := t.TempDir()
	var seen bytes.Buffer // everything any command printed
	check := func(what, out string) {
		t.Helper()
		seen.WriteString(out)
		for _, s := range []string{secret, "WrongPW1", "SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4"} {
			if strings.Contains(out, s) {
				t.Errorf("%s printed a secret (%s):\n%s", what, s, out)
			}
		}
	}

	for _, tc := range []struct {
		name string
		env  []string
	}{
		{"password in the URL", []string{"CONTROLFEED_NATS_URL=nats://alice:" + secret + "@" + hostPort}},
		{"password in the environment", []string{"CONTROLFEED_NATS_URL=nats://" + hostPort,
			"CONTROLFEED_NATS_USER=alice", "CONTROLFEED_NATS_PASSWORD=" + secret}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sub := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			env := append(tc.env, "CONTROLFEED_ARTIFACT_STORE=jetstream", "CONTROLFEED_POLL_INTERVAL=20ms",
				"CONTROLFEED_LOG_LEVEL=debug", "CONTROLFEED_NATS_STREAM=S"+fmt.Sprint(len(tc.env)),
				"CONTROLFEED_NATS_SUBJECT=s"+fmt.Sprint(len(tc.env))+".events", "CONTROLFEED_NATS_BUCKET=b"+fmt.Sprint(len(tc.env)))
			pdb, ndb := filepath.Join(sub, "p.db"), filepath.Join(sub, "n.db")
			if err := os.MkdirAll(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			var logs [2]syncBuffer
			done := make(chan error, 2)
			addrs := [2]string{freeAddr(t), freeAddr(t)}
			serve := func(i int, args ...string) {
				go func() {
					m := &Main{Stdout: io.Discard, Stderr: &logs[i], Environ: func() []string { return env }}
					done <- m.Run(ctx, append([]string{"serve", "--listen", addrs[i]}, args...))
				}()
			}
			serve(0, "--db", pdb, "--feed-sink", "jetstream")
			out, errOut, err := run(t, env, "", "kv", "put", "--db", pdb, "greeting", "hello")
			check("kv put", out+errOut+fmt.Sprint(err))
			if err != nil {
				t.Fatalf("kv put: %v", err)
			}
			waitFor(t, 30*time.Second, "the stream to hold the event", func() bool {
				out, errOut, err := run(t, env, "", "tail", "--feed-source", "jetstream", "--follow=false")
				check("tail", out+errOut)
				return err == nil && strings.Count(out, "\n") == 1
			})
			serve(1, "--db", ndb, "--feed-source", "jetstream", "--node-name", "n1")
			waitFor(t, 30*time.Second, "the node to apply the event", func() bool {
				out, errOut, _ := run(t, env, "", "kv", "get", "--db", ndb, "greeting")
				check("kv get", out+errOut)
				return out == "hello\n"
			})
			for _, db := range []string{pdb, ndb} {
				out, errOut, _ := run(t, env, "", "status", "--db", db, "--json")
				check("status", out+errOut)
			}
			for i, a := range addrs {
				for _, path := range []string{"/v1/status", "/metrics", "/healthz"} {
					check(fmt.Sprintf("serve %d %s", i, path), httpGet(t, "http://"+a+path))
				}
			}
			for _, args := range [][]string{{"serve", "--help"}, {"kv", "put", "--help"}, {"tail", "--help"}, {"--help"}} {
				out, errOut, _ := run(t, env, "", args...)
				check(strings.Join(args, " "), out+errOut)
			}
			cancel()
			for range 2 {
				if err := <-done; err != nil {
					t.Errorf("serve: %v", err)
				}
			}
			check("serve (producer) logs", logs[0].String())
			check("serve (node) logs", logs[1].String())
		})
	}

	// Mistakes: each fails, and its error must not carry the secret.
	pdb := filepath.Join(dir, "mistakes.db")
	for _, tc := range []struct{ name, url string }{
		{"nobody listens", "nats://alice:" + secret + "@127.0.0.1:1"},
		{"unparsable URL", "nats://alice:" + secret + "@" + hostPort + ":x"},
		{"wrong password", "nats://alice:WrongPW1@" + hostPort},
		{"token form", "nats://" + secret + "@127.0.0.1:1"},
	} {
		env := []string{"CONTROLFEED_NATS_URL=" + tc.url, "CONTROLFEED_ARTIFACT_STORE=jetstream"}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		var stderr bytes.Buffer
		m := &Main{Stdout: &stderr, Stderr: &stderr, Environ: func() []string { return env }}
		err := m.Run(ctx, []string{"kv", "put", "--db", pdb, "k", "v"})
		cancel()
		check("kv put ("+tc.name+")", stderr.String()+fmt.Sprint(err))
		if err == nil {
			t.Errorf("kv put (%s) succeeded", tc.name)
		}
		out, errOut, err := run(t, env, "", "tail", "--feed-source", "jetstream", "--follow=false")
		check("tail ("+tc.name+")", out+errOut+fmt.Sprint(err))
	}
	creds := filepath.Join(dir, "bad.creds")
	if err := os.WriteFile(creds, []byte("-----BEGIN USER NKEY SEED-----\nSUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4\n------END USER NKEY SEED------\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"CONTROLFEED_NATS_URL=" + srv.ClientURL(), "CONTROLFEED_NATS_CREDS=" + creds, "CONTROLFEED_ARTIFACT_STORE=jetstream"}
	out, errOut, err := run(t, env, "", "tail", "--feed-source", "jetstream", "--follow=false")
	check("tail (creds file)", out+errOut+fmt.Sprint(err))
	if !strings.Contains(seen.String(), "REDACTED") {
		t.Errorf("no command named a server with its secret redacted; the test did not exercise the redaction")
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
