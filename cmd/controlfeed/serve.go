package main

import (
	"context"
	"log/slog"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/internal/node"
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
    the reason when halted, behind the feed's retention or the pump failed),
    GET /v1/status (JSON) and GET /metrics (Prometheus text format).

With both the source and the sink nop (the default) the process is a single
node: local writes are not published. Producers and nodes sharing a file feed
must share --feed-dir and --artifact-dir. SIGINT or SIGTERM stops it cleanly.`,
	example: `controlfeed serve --db node1.db --feed-source file --feed-dir /var/lib/cf/feed --artifact-dir /var/lib/cf/artifacts --listen 127.0.0.1:7480`,
	settings: []string{"db", "feed-source", "feed-sink", "feed-dir", "artifact-store", "artifact-dir",
		"listen", "node-name", "nats-url", "poll-interval", "log-format", "log-level"},
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
	log, err := s.logger(m.Stderr)
	if err != nil {
		return err
	}
	n, err := node.Open(ctx, s.nodeConfig(log))
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped by a signal while starting
		}
		return err
	}
	defer n.Close()
	return n.Run(ctx)
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
	}
}

func (s *settings) feedConfig() feed.SourceConfig {
	return feed.SourceConfig{
		FileDir: s.FeedDir,
		NATS:    feed.NATSConfig{URLs: s.natsURLs(), NodeName: s.nodeName()},
	}
}

func (s *settings) artifactConfig() artifact.Config {
	return artifact.Config{Dir: s.artifactDir(), NATS: artifact.NATSConfig{URLs: s.natsURLs()}}
}
