package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serveProc runs "controlfeed serve" with args and env until the test
// ends, and returns the address its HTTP listener bound (from the start-up
// log line) and its log.
func serveProc(t *testing.T, env []string, args ...string) (string, *syncBuffer) {
	t.Helper()
	if binary == "" {
		t.Skip("needs the controlfeed binary; not built with -short")
	}
	cmd := exec.Command(binary, append([]string{"serve"}, args...)...)
	log := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	re := regexp.MustCompile(`controlfeed node starting.* listen=(\S+)`)
	var addr string
	waitFor(t, 30*time.Second, "serve to start", func() bool {
		if m := re.FindStringSubmatch(log.String()); m != nil {
			addr = m[1]
			return true
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("serve exited: %v\n%s", err, log.String())
		default:
		}
		return false
	})
	return addr, log
}

// fetch GETs url with an optional bearer token and returns status and body.
func fetch(t *testing.T, c *http.Client, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A host-less --listen binds the loopback interface; an explicit 0.0.0.0
// is honoured, with a warning when no token protects it.
func TestServe_ListenDefaultsToLoopback(t *testing.T) {
	dir := t.TempDir()
	addr, log := serveProc(t, nil, "--db", filepath.Join(dir, "a.db"), "--listen", ":0")
	if host, _, _ := net.SplitHostPort(addr); host != "127.0.0.1" {
		t.Fatalf("--listen :0 bound %s, want 127.0.0.1", addr)
	}
	if strings.Contains(log.String(), "reachable beyond this host") {
		t.Errorf("loopback listener warned:\n%s", log.String())
	}
	if code, body := fetch(t, http.DefaultClient, "http://"+addr+"/healthz", ""); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}

	addr, log = serveProc(t, nil, "--db", filepath.Join(dir, "b.db"), "--listen", "0.0.0.0:0")
	if host, _, _ := net.SplitHostPort(addr); host != "0.0.0.0" && host != "::" {
		t.Fatalf("--listen 0.0.0.0:0 bound %s", addr)
	}
	waitFor(t, 10*time.Second, "the warning", func() bool {
		return strings.Contains(log.String(), "reachable beyond this host and requires no token")
	})
}

// With a token, /v1/status and /metrics answer 401 without it or with a
// wrong one, and 200 with it; /healthz stays open; the token never shows in
// the log.
func TestServe_ListenToken(t *testing.T) {
	const token = "0123456789abcdef-secret-token"
	dir := t.TempDir()
	addr, log := serveProc(t, []string{"CONTROLFEED_LISTEN_TOKEN=" + token, "CONTROLFEED_LOG_LEVEL=debug"},
		"--db", filepath.Join(dir, "n.db"), "--listen", "0.0.0.0:0")
	_, port, _ := net.SplitHostPort(addr)
	base := "http://127.0.0.1:" + port
	for _, path := range []string{"/v1/status", "/metrics"} {
		for _, bad := range []string{"", "wrong-token-0123456789", token + "x", token[:len(token)-1]} {
			if code, body := fetch(t, http.DefaultClient, base+path, bad); code != http.StatusUnauthorized || strings.Contains(body, "controlfeed_cursor") {
				t.Errorf("GET %s with token %q = %d %q, want 401", path, bad, code, body)
			}
		}
		if code, body := fetch(t, http.DefaultClient, base+path, token); code != 200 || !strings.Contains(body, "cursor") {
			t.Errorf("GET %s with the token = %d %q", path, code, body)
		}
	}
	if code, body := fetch(t, http.DefaultClient, base+"/healthz", ""); code != 200 || body != "ok\n" {
		t.Errorf("/healthz without token = %d %q, want it open", code, body)
	}
	if strings.Contains(log.String(), token) {
		t.Errorf("the log shows the token:\n%s", log.String())
	}
	if strings.Contains(log.String(), "requires no token") {
		t.Errorf("warned about a missing token although one is set:\n%s", log.String())
	}
	if !strings.Contains(log.String(), "without TLS") {
		t.Errorf("no warning about a token in clear text on 0.0.0.0:\n%s", log.String())
	}
}

// --listen-tls-cert/--listen-tls-key serve HTTPS; plain HTTP is refused.
func TestServe_ListenTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := writeTestCert(t, dir)
	addr, _ := serveProc(t, nil, "--db", filepath.Join(dir, "n.db"), "--listen", "127.0.0.1:0",
		"--listen-tls-cert", certFile, "--listen-tls-key", keyFile)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if code, body := fetch(t, c, "https://"+addr+"/v1/status", ""); code != 200 || !strings.Contains(body, `"cursor"`) {
		t.Errorf("https /v1/status = %d %q", code, body)
	}
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("plain HTTP on the TLS listener answered 200 %q", b)
		}
	}
}

// Settings that cannot work stop serve at start-up with an error naming
// them, never echoing the token.
func TestServe_ListenMisuse(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, _ := writeTestCert(t, dir)
	db := filepath.Join(dir, "n.db")
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"cert without key", nil, []string{"--listen", ":0", "--listen-tls-cert", certFile}, "set both"},
		{"key without cert", nil, []string{"--listen", ":0", "--listen-tls-key", keyFile}, "set both"},
		{"short token", []string{"CONTROLFEED_LISTEN_TOKEN=short-tok"}, []string{"--listen", ":0"}, "at least 16 characters"},
		{"token without listener", []string{"CONTROLFEED_LISTEN_TOKEN=0123456789abcdef-ok"}, nil, "without Listen"},
		{"unreadable cert", nil, []string{"--listen", ":0", "--listen-tls-cert", filepath.Join(dir, "missing.pem"), "--listen-tls-key", keyFile}, "missing.pem"},
		{"key that is no key", nil, []string{"--listen", ":0", "--listen-tls-cert", certFile, "--listen-tls-key", certFile}, "load TLS certificate"},
		{"no port", nil, []string{"--listen", "localhost"}, "want HOST:PORT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runBinary(t, tc.env, "", append([]string{"serve", "--db", db}, tc.args...)...)
			if code == 0 || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, want non-zero and %q:\n%s", code, tc.want, out)
			}
			if strings.Contains(out, "short-tok") {
				t.Errorf("the error echoes the token:\n%s", out)
			}
		})
	}
}

// writeTestCert writes a self-signed certificate for 127.0.0.1 and its key
// (0600) under dir, and returns their paths and a pool trusting it.
func writeTestCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "controlfeed test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}
