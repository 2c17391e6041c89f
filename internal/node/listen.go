package node

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
)

// MinListenTokenLen is the shortest Config.ListenToken Validate accepts.
const MinListenTokenLen = 16

// listenAddress returns the address Open binds for Config.Listen: an
// address without a host (":7480") binds the loopback interface
// (127.0.0.1:7480), so the HTTP API is never exposed by accident; any
// explicit host, 0.0.0.0 and [::] included, is used as given.
func listenAddress(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("node: listen %q: want HOST:PORT, or :PORT for the loopback interface: %w", listen, err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// validateListen checks the listener's token and TLS settings.
func (c *Config) validateListen() error {
	if (c.ListenTLSCertFile == "") != (c.ListenTLSKeyFile == "") {
		return fmt.Errorf("node: config: ListenTLSCertFile %q and ListenTLSKeyFile %q: set both (--listen-tls-cert and --listen-tls-key) or neither",
			c.ListenTLSCertFile, c.ListenTLSKeyFile)
	}
	if t := c.ListenToken; t != "" && (len(t) < MinListenTokenLen || strings.TrimSpace(t) != t || strings.ContainsAny(t, " \t\r\n")) {
		// Never echo the token.
		return fmt.Errorf("node: config: ListenToken (--listen-token) must be at least %d characters without spaces (for example the output of: openssl rand -hex 32)", MinListenTokenLen)
	}
	if c.Listen == "" && (c.ListenToken != "" || c.ListenTLSCertFile != "") {
		return fmt.Errorf("node: config: a listener token or TLS certificate without Listen (--listen): there is no HTTP server to protect")
	}
	return nil
}

// listen binds Config.Listen (see listenAddress), wraps it in TLS when
// configured, and warns when the API is reachable beyond this host without
// a token, or with a token in clear text.
func (n *Node) listen(ctx context.Context) error {
	c := &n.cfg
	addr, err := listenAddress(c.Listen)
	if err != nil {
		return err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("node: listen %q: %w", c.Listen, err)
	}
	tlsOn := c.ListenTLSCertFile != ""
	if tlsOn {
		cert, err := tls.LoadX509KeyPair(c.ListenTLSCertFile, c.ListenTLSKeyFile)
		if err != nil {
			ln.Close()
			return fmt.Errorf("node: listen %q: load TLS certificate %s and key %s (--listen-tls-cert, --listen-tls-key; PEM files): %w",
				c.Listen, c.ListenTLSCertFile, c.ListenTLSKeyFile, err)
		}
		if fi, err := os.Stat(c.ListenTLSKeyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
			n.log.Warn("the HTTP listener's TLS key is readable by other users; chmod 600 it", "key", c.ListenTLSKeyFile, "mode", fi.Mode().Perm().String())
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	n.ln = ln
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() {
		switch {
		case c.ListenToken == "":
			n.log.Warn("the HTTP listener is reachable beyond this host and requires no token: anyone who can connect reads this node's status and metrics; "+
				"set --listen-token (or CONTROLFEED_LISTEN_TOKEN), with --listen-tls-cert/--listen-tls-key, or listen on 127.0.0.1",
				"listen", ln.Addr().String())
		case !tlsOn:
			n.log.Warn("the HTTP listener is reachable beyond this host without TLS: its bearer token travels in clear text; set --listen-tls-cert and --listen-tls-key",
				"listen", ln.Addr().String())
		}
	}
	return nil
}

// authorized reports whether r carries the listener's bearer token, or no
// token is configured. A browser may send the token as the password of
// HTTP Basic authentication instead (any user name): it prompts for it
// once and then sends it with every request of the console, its event
// stream included, which cannot carry a bearer header. The comparison
// takes the same time whatever the presented value (digests of equal
// length, crypto/subtle).
func (n *Node) authorized(r *http.Request) bool {
	want := n.cfg.ListenToken
	if want == "" {
		return true
	}
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	switch {
	case ok && strings.EqualFold(scheme, "Bearer"):
	case ok && strings.EqualFold(scheme, "Basic"):
		_, pw, bok := r.BasicAuth()
		if !bok {
			return false
		}
		got = pw
	default:
		return false
	}
	g, w := sha256.Sum256([]byte(strings.TrimSpace(got))), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// requireToken answers 401 to requests without the listener's token.
func (n *Node) requireToken(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !n.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="controlfeed"`)
			w.Header().Add("WWW-Authenticate", `Basic realm="controlfeed (password: the listener's --listen-token)"`)
			http.Error(w, "unauthorized: this listener requires the header \"Authorization: Bearer <token>\" with the node's --listen-token (a browser: any user name, the token as password)", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}
