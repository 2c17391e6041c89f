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

// Options returns the client options for a connection named name that
// reconnects forever, waiting reconnectWait between attempts, with auth's
// credentials and TLS settings, followed by extra (which may override any
// of them).
func Options(name string, reconnectWait time.Duration, auth Auth, extra ...nats.Option) []nats.Option {
	opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(reconnectWait)}
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
