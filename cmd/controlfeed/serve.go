package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/internal/natsconn"
	"github.com/controlfeed/controlfeed/internal/natsembed"
	"github.com/controlfeed/controlfeed/internal/node"
)

// Names of the backends the embedded NATS server serves (registered by the
// jetstream packages blank-imported in backends.go).
const (
	jetstreamFeed  = "jetstream"
	jetstreamStore = "jetstream"
	// defaultNATSListen is the client address of an embedded server.
	defaultNATSListen = "127.0.0.1:4222"
)

var serveCmd = &command{
	name:    "serve",
	summary: "run a producer (pump) and/or a node (applier) with an HTTP status endpoint",
	details: `Runs one controlfeed process on the SQLite database --db (created and
migrated if needed):

  - with --feed-sink other than nop, the outbox pump publishes every change
    recorded in the database's outbox (by "controlfeed kv put/delete" or an
    embedding service) to the feed, in commit order;
  - with --feed-source other than nop, the applier applies the feed's events
    to the database's kv table, in order, exactly once, and halts (visibly)
    at an event that fails instead of skipping it;
  - with --listen, an HTTP server answers GET /healthz (200 "ok", or 503 with
    the reason when halted at an event that cannot be applied, unavailable
    (the feed, the artifact store or the database failing) for longer than
    --unavailable-grace, facing a gap in the feed, behind the feed's
    retention, ahead of the feed's head, the pump failed, or no progress
    for longer than --stall-threshold: a publish or a feed or artifact
    store call that has not returned, an outbox row not yet published, or
    a cursor that does not move while the feed has events after it),
    GET /v1/status (JSON) and GET /metrics (Prometheus text format).

The HTTP listener binds the loopback interface unless told otherwise:
--listen :7480 means 127.0.0.1:7480. To serve other hosts (a Prometheus
server, a load balancer) give the host explicitly, --listen 0.0.0.0:7480 or
an interface's address; without --listen-token serve then logs a warning.
With --listen-token (prefer CONTROLFEED_LISTEN_TOKEN: flags show in ps)
/v1/status and /metrics require "Authorization: Bearer TOKEN" (401
otherwise); /healthz stays open for probes but gives its reasons only with
the token. --listen-tls-cert and --listen-tls-key (PEM) serve HTTPS;
restart to rotate them.

A node (--feed-source file or jetstream) writes its fleet report, which
"controlfeed fleet" reads: its cursor, state, halt, state digest and
application digest, on change (at most every second) and at least every
--fleet-heartbeat. On the file feed it is FEED_DIR/.nodes/NODE.json; on
jetstream a key of the bucket <stream>_NODES, which the producer creates
(with --nats-replicas) as it does the stream. The node name (--node-name)
must then be 1-128 characters of A-Z a-z 0-9 _ . - (otherwise serve logs a
warning and writes no report).

A halted node retries the event and can be passed over with "controlfeed
skip"; an unavailable node or one facing a gap retries by itself and cannot
be skipped (see the README's runbooks).

With both the source and the sink nop (the default) the process is a single
node: local writes are not published. Producers and nodes sharing a file feed
must share --feed-dir and --artifact-dir. A file feed's directory is created
by its sink (--feed-sink file), never by a node: a --feed-dir that does not
exist, or that the node may not list, stops serve at start-up. SIGINT or
SIGTERM stops it cleanly.

On jetstream (--feed-source/--feed-sink jetstream, --artifact-store
jetstream) the process connects to --nats-url. With --embedded-nats it runs
a NATS JetStream server itself, on --nats-listen with its data in
--nats-store, and connects to it; --nats-url must then be empty. Unless
--feed-source or --feed-sink is given, --embedded-nats makes the process the
producer (--feed-sink jetstream), and unless --artifact-store is given, the
artifact store is jetstream too. The log line "embedded NATS server ready"
shows the flags other nodes use to join. On shutdown the node stops first,
then the server.

With --signing-key a producer signs every event it publishes, chained to
the one before; with --trust-key (one or more) a node verifies every event
before anything else and refuses an unsigned, altered, unknown-key,
dropped, reordered, replayed or injected one: a security halt
(controlfeed_security_halted), which only "skip --security-override"
passes. A node without --trust-key applies whatever the feed holds. See
docs/SECURITY.md.
` + postgresHelp + "\n" + bootstrapHelp + periodicHelp,
	example: `controlfeed serve --db node1.db --feed-source file --feed-dir /var/lib/cf/feed --artifact-dir /var/lib/cf/artifacts --listen 127.0.0.1:7480`,
	settings: settingList([]string{"db", "feed-source", "feed-sink", "feed-dir", "artifact-store", "artifact-dir",
		"listen"}, listenSettings, []string{"node-name"}, natsSettings, natsFeedSettings, []string{"nats-bucket", "embedded-nats", "nats-listen", "nats-store",
		"max-artifact-bytes", "poll-interval", "unavailable-grace", "stall-threshold", "signing-key", "trust-key", "fleet-heartbeat",
		"app-digest-interval", "log-format", "log-level"}, bootstrapSettings, snapshotSettings),
	createDB: true,
}

func (m *Main) runServe(ctx context.Context, args []string) error {
	var s settings
	pos, err := serveCmd.parse(m, &s, args)
	if err != nil {
		return helpOK(err)
	}
	if len(pos) > 0 {
		return usageErrorf("controlfeed serve: unexpected argument %q", pos[0])
	}
	if s.DB == "" {
		return usageErrorf("controlfeed serve: --db is required (or CONTROLFEED_DB)")
	}
	if err := s.checkPostgresDB(serveCmd); err != nil {
		return err
	}
	log, err := s.logger(m.Stderr)
	if err != nil {
		return err
	}
	if err := s.checkMaxArtifactBytes(serveCmd); err != nil {
		return err
	}
	if err := s.checkBackends(serveCmd); err != nil {
		return err
	}
	if err := s.checkBootstrap(serveCmd); err != nil {
		return err
	}
	if err := s.loadTrust(serveCmd); err != nil {
		return err
	}
	if err := s.checkSnapshots(serveCmd); err != nil {
		return err
	}
	if s.EmbeddedNATS {
		srv, err := s.startEmbeddedNATS(m, log)
		if err != nil {
			return err
		}
		defer srv.Shutdown() // deferred first: runs after the node's Close
	}
	s.logDefaultNATSURL(serveCmd, log)
	if err := s.bootstrap(ctx, log); err != nil {
		if ctx.Err() != nil {
			return nil // stopped by a signal while starting
		}
		return err
	}
	s.warnSnapshotCadence(ctx, log)
	n, err := openNode(ctx, log, s.nodeConfig(log))
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped by a signal while starting
		}
		return servePumpStoreError(s.DB, err)
	}
	if err := s.createSnapshotCatalog(ctx, log); err != nil {
		n.Close()
		return err
	}
	if err := s.createFleetStore(ctx, log); err != nil {
		n.Close()
		return err
	}
	return s.runNode(ctx, log, n)
}

// Backoff of openNode while no NATS server answers.
const (
	openMinBackoff = 250 * time.Millisecond
	openMaxBackoff = 5 * time.Second
)

// openNode is node.Open, retried with capped exponential backoff for as long
// as the only problem is that the broker cannot serve yet (no server
// answers, or it is restarting and requests time out: see
// brokerUnavailable), so that a node or a producer started before its
// broker, or during a broker restart, waits for it instead of exiting. Any
// other error is returned at once; ctx ends the wait. The same holds for a
// PostgreSQL --db whose server does not answer (node.ErrPostgresUnavailable):
// a producer started before its database, or during its restart, waits.
func openNode(ctx context.Context, log *slog.Logger, cfg *node.Config) (*node.Node, error) {
	backoff := openMinBackoff
	for {
		n, err := node.Open(ctx, cfg)
		pgDown := errors.Is(err, node.ErrPostgresUnavailable)
		if err == nil || !(pgDown || brokerUnavailable(err)) || ctx.Err() != nil {
			return n, err
		}
		if pgDown {
			log.Warn("the PostgreSQL server does not answer; retrying (check --db and that the server runs)",
				"db", node.RedactDB(cfg.DB), "retry_in", backoff, "err", err)
		} else {
			log.Warn("the NATS server does not answer or is not ready; retrying (check --nats-url and that the broker runs)",
				"nats_url", natsconn.RedactURLs(cfg.Feed.NATS.URLs), "retry_in", backoff, "err", err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, openMaxBackoff)
	}
}

// brokerUnavailable reports whether err means only that the broker cannot
// serve requests right now: none answers, it is restarting (requests time
// out, JetStream is not ready or has no responders yet), or the connection
// was reset or closed during the handshake (a broker or a proxy going
// down mid-connect).
func brokerUnavailable(err error) bool {
	for _, target := range []error{nats.ErrNoServers, nats.ErrTimeout, nats.ErrNoResponders,
		nats.ErrConnectionClosed, jetstream.ErrJetStreamNotEnabled, context.DeadlineExceeded,
		syscall.ECONNRESET, syscall.ECONNREFUSED, syscall.ECONNABORTED, io.EOF, io.ErrUnexpectedEOF} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// startEmbeddedNATS starts the server of --embedded-nats, points the NATS
// settings at it and resolves the jetstream defaults documented in serve's
// help.
func (s *settings) startEmbeddedNATS(m *Main, log *slog.Logger) (*natsembed.Server, error) {
	if s.NATSURL != "" {
		return nil, usageErrorf("controlfeed serve: --embedded-nats and --nats-url %q conflict: the embedded server is the one to use", s.NATSURL)
	}
	if !s.set["feed-source"] && !s.set["feed-sink"] {
		s.FeedSink = jetstreamFeed
	}
	if !s.set["artifact-store"] {
		s.ArtifactStore = jetstreamStore
	}
	listen := cmp.Or(s.NATSListen, defaultNATSListen)
	if node.IsPostgresURL(s.DB) && s.NATSStore == "" {
		return nil, usageErrorf("controlfeed serve: --embedded-nats with a PostgreSQL --db needs --nats-store DIR (its default is beside a SQLite --db)")
	}
	store := cmp.Or(s.NATSStore, s.DB+".nats")
	srv, err := natsembed.Start(natsembed.Options{Listen: listen, StoreDir: store,
		Logger: s.quietLogger(m.Stderr, log), ServerName: "controlfeed-" + s.nodeName()})
	if err != nil {
		return nil, fmt.Errorf("controlfeed serve: --embedded-nats: %w", err)
	}
	s.NATSURL = srv.ClientURL()
	log.Info("embedded NATS server ready", "url", s.NATSURL, "store", store,
		"join_with", "--feed-source jetstream --nats-url "+s.NATSURL+" --artifact-store jetstream")
	return srv, nil
}

// nodeConfig maps the settings onto node.Config.
func (s *settings) nodeConfig(log *slog.Logger) *node.Config {
	return &node.Config{
		DB:            s.DB,
		FeedSource:    s.FeedSource,
		FeedSink:      s.FeedSink,
		Feed:          s.feedConfig(),
		ArtifactStore: s.ArtifactStore,
		Artifact:      s.artifactConfig(),
		Listen:        s.Listen,
		NodeName:      s.nodeName(),
		PollInterval:  s.PollInterval,
		Logger:        log,

		MaxArtifactBytes: s.MaxArtifactBytes,

		UnavailableGrace: s.UnavailableGrace,
		StallThreshold:   s.StallThreshold,

		BehindRetentionAdvice: s.behindAdvice,
		Snapshots:             s.snapshotConfig(log),

		FleetReports:      true,
		FleetHeartbeat:    s.FleetHeartbeat,
		Version:           controlfeedVersion(),
		AppDigestInterval: s.AppDigestInterval,

		ListenToken:       s.ListenToken,
		ListenTLSCertFile: s.ListenTLSCert,
		ListenTLSKeyFile:  s.ListenTLSKey,

		SigningKey:  s.signer,
		TrustedKeys: s.keyring,
	}
}

// feedConfig maps the settings onto feed.SourceConfig: this and
// artifactConfig are the one place the NATS flags reach the backends.
func (s *settings) feedConfig() feed.SourceConfig {
	return feed.SourceConfig{
		FileDir: s.FeedDir,
		NATS: feed.NATSConfig{
			URLs:            s.natsURLs(),
			NodeName:        s.nodeName(),
			Stream:          s.NATSStream,
			Subject:         s.NATSSubject,
			CredsFile:       s.NATSCreds,
			User:            s.NATSUser,
			Password:        s.NATSPassword,
			TLSCAFile:       s.NATSTLSCA,
			TLSCertFile:     s.NATSTLSCert,
			TLSKeyFile:      s.NATSTLSKey,
			Replicas:        s.NATSReplicas,
			MaxAge:          s.NATSMaxAge,
			MaxBytes:        s.NATSMaxBytes,
			DuplicateWindow: s.NATSDuplicateWindow,
			RequestTimeout:  s.NATSTimeout,
		},
	}
}

// artifactConfig maps the settings onto artifact.Config.
func (s *settings) artifactConfig() artifact.Config {
	return artifact.Config{Dir: s.artifactDir(), NATS: artifact.NATSConfig{
		URLs:           s.natsURLs(),
		Bucket:         s.NATSBucket,
		Replicas:       s.NATSReplicas,
		CredsFile:      s.NATSCreds,
		User:           s.NATSUser,
		Password:       s.NATSPassword,
		TLSCAFile:      s.NATSTLSCA,
		TLSCertFile:    s.NATSTLSCert,
		TLSKeyFile:     s.NATSTLSKey,
		RequestTimeout: s.NATSTimeout,
	}}
}
