// Package natsembed runs an in-process NATS server with JetStream enabled, so
// one machine (or one test) needs no separately installed broker.
//
// # Persistence
//
// JetStream state lives in Options.StoreDir. Starting a new Server on the same
// StoreDir after Shutdown finds the streams, consumers and object-store
// buckets of the previous one: a restart loses nothing that was acknowledged.
// Two servers must never share a StoreDir at the same time.
//
// # Errors
//
// Start fails with an error naming the listen address or the store directory
// when the server cannot be configured, cannot listen, or does not become
// ready within Options.ReadyTimeout.
package natsembed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// DefaultReadyTimeout is how long Start waits for the server to accept
// connections when Options.ReadyTimeout is zero.
const DefaultReadyTimeout = 10 * time.Second

// Options configures an embedded server. The zero value is not usable:
// StoreDir is required.
type Options struct {
	// Listen is the client address, "host:port". Empty means
	// "127.0.0.1:0"; port 0 picks a free random port (see ClientURL).
	Listen string
	// StoreDir is the JetStream file-store directory. Required.
	StoreDir string
	// Logger receives the server's log lines (notices at Info, warnings,
	// errors; debug and trace are off). Nil discards them.
	Logger *slog.Logger
	// ServerName names the server (shown in stream info and logs). Empty
	// lets the server generate one.
	ServerName string
	// ReadyTimeout bounds the wait for the server to accept connections.
	// Zero means DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// User and Password, if set, make the server require them from every
	// client (one user with all permissions). Empty: no authentication.
	User, Password string
}

func (o *Options) setDefaults() {
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = DefaultReadyTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports whether o can start a server: StoreDir must be set,
// Listen (if set) must be "host:port" with a numeric port, ReadyTimeout must
// not be negative.
func (o Options) Validate() error {
	if o.StoreDir == "" {
		return errors.New("natsembed: options: StoreDir is required")
	}
	if o.Listen != "" {
		if _, err := splitListen(o.Listen); err != nil {
			return err
		}
	}
	if o.ReadyTimeout < 0 {
		return fmt.Errorf("natsembed: options: ReadyTimeout %v is negative", o.ReadyTimeout)
	}
	return nil
}

type hostPort struct {
	host string
	port int
}

func splitListen(s string) (hostPort, error) {
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		return hostPort{}, fmt.Errorf("natsembed: options: listen %q: %w", s, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return hostPort{}, fmt.Errorf("natsembed: options: listen %q: port %q is not a number in 0..65535", s, ps)
	}
	if port == 0 {
		// nats-server treats 0 as "default 4222"; -1 means random.
		port = server.RANDOM_PORT
	}
	return hostPort{host: host, port: port}, nil
}

// Server is a running embedded NATS server. Its methods are safe for
// concurrent use.
type Server struct {
	ns       *server.Server
	storeDir string
}

// Start configures and starts a server with JetStream enabled and waits until
// it accepts client connections. The caller must call Shutdown.
func Start(opts Options) (*Server, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts.setDefaults()
	hp, err := splitListen(opts.Listen)
	if err != nil {
		return nil, err
	}
	sopts := &server.Options{
		ServerName: opts.ServerName,
		Host:       hp.host,
		Port:       hp.port,
		JetStream:  true,
		StoreDir:   opts.StoreDir,
		NoSigs:     true,
		Username:   opts.User,
		Password:   opts.Password,
		// HTTP monitoring, cluster, leafnodes: off.
	}
	ns, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("natsembed: start %s (store %s): %w", opts.Listen, opts.StoreDir, err)
	}
	ns.SetLoggerV2(slogAdapter{opts.Logger}, false, false, false)
	ns.Start()
	if !ns.ReadyForConnections(opts.ReadyTimeout) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("natsembed: start %s (store %s): not ready for connections within %v (port in use? store locked by another server?)",
			opts.Listen, opts.StoreDir, opts.ReadyTimeout)
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("natsembed: start %s (store %s): JetStream did not start", opts.Listen, opts.StoreDir)
	}
	return &Server{ns: ns, storeDir: opts.StoreDir}, nil
}

// ClientURL returns the URL clients connect to, e.g.
// "nats://127.0.0.1:41234", with the actual port when Listen asked for a
// random one.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Addr returns the "host:port" the server listens on; pass it as
// Options.Listen to restart a server on the same address.
func (s *Server) Addr() string {
	a := s.ns.Addr()
	if a == nil {
		return ""
	}
	return a.String()
}

// StoreDir returns Options.StoreDir as given to Start.
func (s *Server) StoreDir() string { return s.storeDir }

// Shutdown stops the server and waits until it has stopped and flushed its
// store. Calling it more than once is safe.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// NATSServer returns the underlying nats-server instance for advanced use
// (monitoring, accounts). Do not call its Shutdown directly; use Shutdown.
func (s *Server) NATSServer() *server.Server { return s.ns }

// slogAdapter implements server.Logger on a *slog.Logger.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) logf(level slog.Level, format string, v ...any) {
	if !a.l.Enabled(context.Background(), level) {
		return
	}
	a.l.Log(context.Background(), level, fmt.Sprintf(format, v...), "component", "nats-server")
}

func (a slogAdapter) Noticef(format string, v ...any) { a.logf(slog.LevelInfo, format, v...) }
func (a slogAdapter) Warnf(format string, v ...any)   { a.logf(slog.LevelWarn, format, v...) }
func (a slogAdapter) Fatalf(format string, v ...any)  { a.logf(slog.LevelError, format, v...) }
func (a slogAdapter) Errorf(format string, v ...any)  { a.logf(slog.LevelError, format, v...) }
func (a slogAdapter) Debugf(format string, v ...any)  { a.logf(slog.LevelDebug, format, v...) }
func (a slogAdapter) Tracef(format string, v ...any)  { a.logf(slog.LevelDebug-4, format, v...) }
