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
// # Clustering
//
// With Options.ClusterName, ClusterListen and Routes set, the server is one
// member of a NATS cluster with clustered JetStream: streams and buckets can
// then be replicated (R3 on three members). Every member gets the same
// cluster name, its own ServerName and StoreDir, and the route URLs of the
// members ("nats-route://host:port", its own may be included: a server
// ignores the route to itself). A cluster serves JetStream once a majority of
// its members run and have elected a meta leader; Start returns when this
// member accepts client connections, which may be before that (see
// WaitClusterReady).
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
	"net/url"
	"strconv"
	"strings"
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

	// ClusterName names the cluster this server is a member of. It is
	// required with ClusterListen, and must be the same on every member.
	ClusterName string
	// ClusterListen is the "host:port" the server accepts routes from the
	// other members on (port 0 picks a free random port, see ClusterAddr).
	// Empty: not clustered (ClusterName and Routes must be empty too).
	ClusterListen string
	// Routes are the other members' route URLs, "nats-route://host:port"
	// (this server's own may be included). Required with ClusterListen:
	// JetStream needs them to form its meta group.
	Routes []string
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
	return o.validateCluster()
}

// validateCluster checks the cluster options: all or none of ClusterName,
// ClusterListen and Routes, a ServerName for clustered JetStream, and route
// URLs with a host and a port.
func (o Options) validateCluster() error {
	if o.ClusterListen == "" {
		if o.ClusterName != "" || len(o.Routes) > 0 {
			return errors.New("natsembed: options: ClusterName and Routes need ClusterListen (the address other members connect to)")
		}
		return nil
	}
	if _, err := splitListen(o.ClusterListen); err != nil {
		return fmt.Errorf("natsembed: options: cluster %w", err)
	}
	switch {
	case o.ClusterName == "":
		return fmt.Errorf("natsembed: options: cluster listen %q needs ClusterName (the same on every member)", o.ClusterListen)
	case strings.ContainsAny(o.ClusterName, " \t\r\n"):
		return fmt.Errorf("natsembed: options: cluster name %q contains white space", o.ClusterName)
	case o.ServerName == "":
		return fmt.Errorf("natsembed: options: cluster member on %q needs ServerName (unique in the cluster): clustered JetStream identifies its peers by it", o.ClusterListen)
	case len(o.Routes) == 0:
		return fmt.Errorf("natsembed: options: cluster member on %q needs Routes (the members' nats-route://host:port URLs): clustered JetStream needs them", o.ClusterListen)
	}
	_, err := parseRoutes(o.Routes)
	return err
}

// parseRoutes parses route URLs: scheme nats-route (or nats), a host and a
// numeric port.
func parseRoutes(routes []string) ([]*url.URL, error) {
	var urls []*url.URL
	for _, r := range routes {
		u, err := url.Parse(strings.TrimSpace(r))
		if err != nil {
			return nil, fmt.Errorf("natsembed: options: route %q: want nats-route://host:port: %w", r, err)
		}
		if u.Scheme != "nats-route" && u.Scheme != "nats" || u.Hostname() == "" || u.Port() == "" {
			return nil, fmt.Errorf("natsembed: options: route %q: want nats-route://host:port", r)
		}
		if p, err := strconv.Atoi(u.Port()); err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("natsembed: options: route %q: port %q is not a number in 1..65535", r, u.Port())
		}
		urls = append(urls, u)
	}
	return urls, nil
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
	ns        *server.Server
	storeDir  string
	clustered bool    // started with ClusterListen
	opts      Options // as given to Start, for restarts
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
		// HTTP monitoring, leafnodes: off. Cluster: see below.
	}
	if opts.ClusterListen != "" {
		chp, err := splitListen(opts.ClusterListen)
		if err != nil {
			return nil, err
		}
		routes, err := parseRoutes(opts.Routes)
		if err != nil {
			return nil, err
		}
		sopts.Cluster = server.ClusterOpts{Name: opts.ClusterName, Host: chp.host, Port: chp.port}
		sopts.Routes = routes
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
	return &Server{ns: ns, storeDir: opts.StoreDir, clustered: opts.ClusterListen != "", opts: opts}, nil
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

// ClusterAddr returns the "host:port" the server accepts routes on, "" when
// it is not clustered; "nats-route://" + ClusterAddr() is its route URL.
func (s *Server) ClusterAddr() string {
	a := s.ns.ClusterAddr()
	if a == nil {
		return ""
	}
	return a.String()
}

// Name returns the server's name (Options.ServerName, or the one it
// generated).
func (s *Server) Name() string { return s.ns.Name() }

// WaitClusterReady waits until the members form one JetStream cluster that
// can place replicated streams on all of them: one member is the meta
// leader and counts every member as an online peer, and every member is
// current with it. On a single unclustered server it returns at once. It
// returns an error wrapping ctx's error, with what it last saw, if that
// does not happen before ctx ends.
func WaitClusterReady(ctx context.Context, members ...*Server) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		leader, current := "", 0
		peers := 0
		for _, m := range members {
			if !m.clustered {
				current++
				continue
			}
			if m.ns.JetStreamIsCurrent() {
				current++
			}
			if m.ns.JetStreamIsLeader() {
				leader, peers = m.Name(), len(m.ns.JetStreamClusterPeers())
			}
		}
		if current == len(members) && (leader != "" && peers >= len(members) || !anyClustered(members)) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("natsembed: JetStream cluster of %d members not ready (meta leader %q with %d online peers, %d members current): %w",
				len(members), leader, peers, current, ctx.Err())
		case <-t.C:
		}
	}
}

func anyClustered(members []*Server) bool {
	for _, m := range members {
		if m.clustered {
			return true
		}
	}
	return false
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
