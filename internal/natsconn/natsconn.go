// Package natsconn builds the NATS client options shared by every controlfeed
// component that connects to a NATS server (the jetstream feed and the
// jetstream artifact store), so authentication and TLS behave the same
// everywhere.
package natsconn

import (
	"time"

	"github.com/nats-io/nats.go"
)

// Auth holds how a client authenticates and secures its connection. The zero
// value connects anonymously without TLS.
type Auth struct {
	// CredsFile is a NATS credentials (.creds) file.
	CredsFile string
	// User and Password authenticate with user/password.
	User, Password string
	// TLSCAFile is the CA that signs the servers' certificates;
	// TLSCertFile and TLSKeyFile are this client's certificate and key.
	TLSCAFile, TLSCertFile, TLSKeyFile string
}

// PingInterval and MaxPingsOutstanding are the client's keepalive: a PING
// every PingInterval, and the connection is dropped as stale (the client
// then reconnects to another server of its list) when more than
// MaxPingsOutstanding have no answer, about 8 s after a server stopped
// answering. A server that stalls (a SIGSTOPped or wedged nats-server, a
// link that holds the bytes) keeps its TCP connections open, so without
// this a client stays on it for nats.go's default of 2 minutes x 2 pings,
// every request timing out, although the cluster's other members serve.
const (
	PingInterval        = 2 * time.Second
	MaxPingsOutstanding = 3
)

// Options returns the client options for a connection named name that
// reconnects forever, waiting reconnectWait between attempts, drops a
// server that stops answering (PingInterval, MaxPingsOutstanding), with
// auth's credentials and TLS settings, followed by extra (which may
// override any of them).
func Options(name string, reconnectWait time.Duration, auth Auth, extra ...nats.Option) []nats.Option {
	opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(reconnectWait),
		nats.PingInterval(PingInterval), nats.MaxPingsOutstanding(MaxPingsOutstanding)}
	if auth.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(auth.CredsFile))
	}
	if auth.User != "" || auth.Password != "" {
		opts = append(opts, nats.UserInfo(auth.User, auth.Password))
	}
	if auth.TLSCAFile != "" {
		opts = append(opts, nats.RootCAs(auth.TLSCAFile))
	}
	if auth.TLSCertFile != "" {
		opts = append(opts, nats.ClientCert(auth.TLSCertFile, auth.TLSKeyFile))
	}
	return append(opts, extra...)
}
