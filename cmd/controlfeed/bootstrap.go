package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/feed/nop"
	"github.com/controlfeed/controlfeed/internal/natsconn"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/snapshot"
)

// bootstrapSettings are serve's flags of the automatic snapshot bootstrap.
var bootstrapSettings = []string{"bootstrap", "bootstrap-when-behind"}

// Bootstrap modes of serve --bootstrap.
const (
	bootstrapAuto = "auto"
	bootstrapOff  = "off"
)

// bootstrapHelp is the part of serve's help on the bootstrap.
const bootstrapHelp = `
A node (--feed-source other than nop) bootstraps from the feed's latest
published snapshot ("controlfeed snapshot publish") with --bootstrap=auto,
the default: when its database is new (missing, empty, or a node that has
applied nothing), it restores the snapshot before it starts applying and
resumes the feed after the snapshot's cursor, instead of replaying the
whole history. Without a published snapshot it replays from the start.
--bootstrap=off always replays.

A node whose database holds state is never replaced, except when it is
behind the feed's retention (the events after its cursor are gone) and
--bootstrap-when-behind is given: it then replaces its database, at
start-up and logged, with the latest snapshot if that one covers the
retention (its cursor is at or after the event before the oldest one the
feed holds). Otherwise it reports behind_retention as usual, and the status
names the command that fixes it, or says that no published snapshot can
and that a newer one must be published from an up-to-date node. With
--bootstrap-when-behind a running node that falls behind the retention
(halted or stalled for longer than it) also looks for such a snapshot
every few seconds, and once one is published stops, replaces its database
with it (logged) and resumes.`

// checkBootstrap rejects an unknown --bootstrap mode.
func (s *settings) checkBootstrap(cmd *command) error {
	switch s.Bootstrap {
	case bootstrapOff:
		if s.BootstrapWhenBehind {
			return usageErrorf("controlfeed %s: --bootstrap-when-behind with --bootstrap off: the node would never restore a snapshot; "+
				"drop --bootstrap off (the default is auto) to let it restore when behind the feed's retention\n%s", cmd.name, cmd.usageLine())
		}
		return nil
	case bootstrapAuto:
		return nil
	}
	return usageErrorf("controlfeed %s: --bootstrap %q (or %s): want auto or off\n%s", cmd.name, s.Bootstrap, cmd.envName("bootstrap"), cmd.usageLine())
}

// bootstrapProbeTimeout bounds the feed probe of the retention check.
const bootstrapProbeTimeout = 30 * time.Second

// bootstrap runs serve's snapshot bootstrap before the node opens its
// database (see bootstrapHelp), retrying with capped backoff for as long as
// the only problem is that the broker cannot serve yet, as openNode does.
// It sets s.behindAdvice, which the node shows with a behind-retention
// report. An error stops serve: a snapshot that should be restored and
// cannot be (corrupt, incompatible, missing from the store) is not
// silently replaced by a full replay.
func (s *settings) bootstrap(ctx context.Context, log *slog.Logger) error {
	if s.FeedSource == "" || s.FeedSource == nop.Name {
		return nil
	}
	s.behindAdvice = s.restoreAdvice()
	if s.Bootstrap == bootstrapOff {
		return nil
	}
	backoff := openMinBackoff
	for {
		err := s.bootstrapOnce(ctx, log)
		if err == nil || !brokerUnavailable(err) || ctx.Err() != nil {
			return err
		}
		log.Warn("bootstrap: the NATS server does not answer or is not ready; retrying (check --nats-url and that the broker runs)",
			"retry_in", backoff, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, openMaxBackoff)
	}
}

func (s *settings) bootstrapOnce(ctx context.Context, log *slog.Logger) error {
	st, err := snapshot.Inspect(ctx, s.DB)
	if err != nil {
		return fmt.Errorf("controlfeed serve: bootstrap: %w", err)
	}
	if st.New {
		return s.bootstrapNew(ctx, log)
	}
	if st.Cursor == 0 {
		return nil // not a node with a position: node.Open judges it
	}
	first, behind := s.probeRetention(ctx, log, st.Cursor)
	if !behind {
		return nil
	}
	log.Error("bootstrap: the node is behind the feed's retention", "cursor", st.Cursor, "first_available", first)
	if !s.BootstrapWhenBehind {
		log.Error("bootstrap: not replacing the database without --bootstrap-when-behind; " + s.behindAdvice)
		return nil
	}
	rec, err := s.latestSnapshot(ctx)
	if err != nil && !errors.Is(err, snapshot.ErrNoSnapshot) && !errors.Is(err, snapshot.ErrNoCatalog) {
		return err
	}
	if err != nil || !rec.Covers(first) {
		have := "no snapshot is published"
		if err == nil {
			have = fmt.Sprintf("the latest published snapshot %s is at cursor %d", rec.Manifest, rec.ControlVersion)
		}
		s.behindAdvice = fmt.Sprintf("no published snapshot can bring this node within the feed's retention: %s, and the oldest event the feed holds is %d, "+
			"so it needs one at cursor %d or later: publish one from an up-to-date node (controlfeed snapshot publish --db NODE.db %s), then restart this node",
			have, first, first-1, s.feedFlags())
		log.Error("bootstrap: " + s.behindAdvice)
		return nil
	}
	log.Warn("bootstrap: --bootstrap-when-behind: replacing the database of a node behind the feed's retention with the latest snapshot",
		"db", s.DB, "cursor", st.Cursor, "applied_events", st.AppliedEvents, "first_available", first,
		"snapshot", rec.Manifest, "snapshot_cursor", rec.ControlVersion)
	return s.restoreSnapshot(ctx, log, rec, true)
}

// errCatalogUnreadable is wrapped (with snapshot.ErrNoCatalog) by
// latestSnapshot's error when the feed's snapshot catalog could not be
// opened for another reason than a broker outage (a refused connection or
// credentials, a missing feed directory): bootstrap then goes on as without
// a catalog, and says why.
var errCatalogUnreadable = errors.New("cannot open the feed's snapshot catalog")

// bootstrapNew restores the latest snapshot into a new database, if one
// is published.
func (s *settings) bootstrapNew(ctx context.Context, log *slog.Logger) error {
	rec, err := s.latestSnapshot(ctx)
	if errors.Is(err, errCatalogUnreadable) {
		log.Warn("bootstrap: cannot read the feed's snapshot catalog, so no snapshot is restored; the new node replays the feed from the start", "err", err)
		return nil
	}
	if errors.Is(err, snapshot.ErrNoSnapshot) || errors.Is(err, snapshot.ErrNoCatalog) {
		log.Info("bootstrap: no snapshot is published for the feed; the new node replays it from the start", "reason", err)
		return nil
	}
	if err != nil {
		return err
	}
	if err := s.restoreSnapshot(ctx, log, rec, false); err != nil {
		return err
	}
	if first, behind := s.probeRetention(ctx, log, rec.ControlVersion); behind {
		s.behindAdvice = fmt.Sprintf("no published snapshot can bring this node within the feed's retention: the latest, %s, is at cursor %d and the oldest event the feed holds is %d: "+
			"publish a newer one from an up-to-date node (controlfeed snapshot publish --db NODE.db %s), then restore it here (%s)",
			rec.Manifest, rec.ControlVersion, first, s.feedFlags(), s.restoreCommand())
		log.Error("bootstrap: " + s.behindAdvice)
	}
	return nil
}

// restoreSnapshot restores rec into --db.
func (s *settings) restoreSnapshot(ctx context.Context, log *slog.Logger, rec snapshot.Record, force bool) error {
	acfg := s.artifactConfig()
	acfg.Logger = log
	store, err := artifact.Open(s.ArtifactStore, acfg)
	if err != nil {
		return fmt.Errorf("controlfeed serve: bootstrap: %w", err)
	}
	defer closeStore(store)
	start := time.Now()
	m, err := snapshot.RestoreRef(ctx, store, rec.Manifest, s.DB, &snapshot.RestoreOptions{Force: force, Logger: log, TrustedKeys: s.keyring})
	if errors.Is(err, snapshot.ErrUntrusted) {
		return fmt.Errorf("controlfeed serve: bootstrap from snapshot %s (cursor %d): %w; nothing was changed: publish a snapshot signed by a trusted key "+
			"(serve --snapshot-signing-key, or snapshot publish --snapshot-signing-key, on an up-to-date node), restore an older signed one (controlfeed snapshot list, then %s with --ref), "+
			"or start with --bootstrap=off to replay the feed instead",
			rec.Manifest, rec.ControlVersion, err, strings.Replace(s.restoreCommand(), " --latest", "", 1))
	}
	if err != nil {
		return fmt.Errorf("controlfeed serve: bootstrap from snapshot %s (cursor %d): %w; fix it (see controlfeed snapshot list), or start with --bootstrap=off to replay the feed instead",
			rec.Manifest, rec.ControlVersion, err)
	}
	log.Info("bootstrap: restored the feed's latest snapshot; resuming the feed after its cursor", "db", s.DB,
		"snapshot", m.Ref, "cursor", m.ControlVersion, "applied_events", m.AppliedEvents, "bytes", m.Database.Size,
		"from_node", m.Node, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// latestSnapshot reads the latest record from the feed's catalog.
func (s *settings) latestSnapshot(ctx context.Context) (snapshot.Record, error) {
	cat, err := snapshot.OpenCatalog(ctx, s.FeedSource, snapshot.CatalogConfig{Feed: s.feedConfig()})
	if err != nil {
		if brokerUnavailable(err) {
			return snapshot.Record{}, fmt.Errorf("controlfeed serve: bootstrap: %w", err)
		}
		// The feed itself is unusable (a file feed's directory missing):
		// opening the node reports that in its own words.
		return snapshot.Record{}, fmt.Errorf("controlfeed serve: bootstrap: %w: %v: %w", errCatalogUnreadable, err, snapshot.ErrNoCatalog)
	}
	defer closeQuietly(cat)
	rec, err := cat.Latest(ctx)
	if err != nil {
		return snapshot.Record{}, fmt.Errorf("controlfeed serve: bootstrap: %w", err)
	}
	return rec, nil
}

// probeRetention asks the feed, read-only, whether the events after cursor
// are still held: it polls once through an observer (on jetstream an
// ephemeral consumer that touches no node's durable one). It reports
// behind only on a *feed.CursorBehindError; any other outcome (the feed
// unreachable, nothing new) is left to the node, which reports it.
func (s *settings) probeRetention(ctx context.Context, log *slog.Logger, cursor uint64) (first uint64, behind bool) {
	cfg := s.feedConfig()
	cfg.NATS.NodeName = "" // an observer: no durable consumer, no lease
	src, err := feed.Open(s.FeedSource, cfg)
	if err != nil {
		log.Debug("bootstrap: cannot open the feed to check its retention", "err", err)
		return 0, false
	}
	defer closeQuietly(src)
	ctx, cancel := context.WithTimeout(ctx, bootstrapProbeTimeout)
	defer cancel()
	_, err = src.Poll(ctx, cursor)
	var cb *feed.CursorBehindError
	if errors.As(err, &cb) {
		return cb.FirstAvailable, true
	}
	if err != nil {
		log.Debug("bootstrap: cannot check the feed's retention", "cursor", cursor, "err", err)
	}
	return 0, false
}

// restoreAdvice is what the node's behind-retention report says to do.
func (s *settings) restoreAdvice() string {
	if s.BootstrapWhenBehind && s.Bootstrap != bootstrapOff {
		return "restart the node: with --bootstrap-when-behind it restores the latest published snapshot at start-up if that covers the retention"
	}
	return "to fix it, stop the node and restore the latest published snapshot: " + s.restoreCommand() +
		" (or restart serve with --bootstrap-when-behind)"
}

// restoreCommand is the snapshot restore command line for this node.
func (s *settings) restoreCommand() string {
	parts := []string{"controlfeed snapshot restore --db", s.DB, "--latest --force", s.feedFlags(), "--artifact-store", s.ArtifactStore}
	for _, k := range s.TrustKeys {
		parts = append(parts, "--trust-key", k)
	}
	if s.ArtifactStore != jetstreamStore {
		parts = append(parts, "--artifact-dir", s.artifactDir())
	} else if s.NATSBucket != "" {
		parts = append(parts, "--nats-bucket", s.NATSBucket)
	}
	return strings.Join(parts, " ")
}

// feedFlags names the feed in a suggested command line (no secrets).
func (s *settings) feedFlags() string {
	parts := []string{"--feed-source", s.FeedSource}
	if s.FeedSource == jetstreamFeed {
		if s.NATSURL != "" {
			parts = append(parts, "--nats-url", natsconn.RedactURLs(s.natsURLs()))
		}
		if s.NATSStream != "" {
			parts = append(parts, "--nats-stream", s.NATSStream)
		}
	} else if s.FeedDir != "" {
		parts = append(parts, "--feed-dir", s.FeedDir)
	}
	return strings.Join(parts, " ")
}

// createSnapshotCatalog makes a jetstream producer create (or check) the
// feed's snapshot catalog bucket, as it does the stream and the artifact
// bucket, so that nodes can publish and find snapshots; nodes never
// create it. Other feeds need nothing created.
func (s *settings) createSnapshotCatalog(ctx context.Context, log *slog.Logger) error {
	if s.FeedSink != natsfeed.Name {
		return nil
	}
	cat, err := snapshot.OpenCatalog(ctx, s.FeedSink, snapshot.CatalogConfig{Feed: s.feedConfig(), Create: true, Logger: log})
	if err != nil {
		return s.natsTimeoutHint(serveCmd, fmt.Errorf("controlfeed serve: snapshot catalog: %w", err))
	}
	closeQuietly(cat)
	return nil
}

// behindCheckInterval is how often a running node with
// --bootstrap-when-behind looks, while it is behind the feed's retention,
// for a published snapshot that covers it (a variable for tests).
var behindCheckInterval = 10 * time.Second

// runNode runs the opened node n until ctx is done, then closes it. With
// --bootstrap-when-behind (and --bootstrap=auto) it also watches the node:
// once it is behind the feed's retention while running (it was stopped or
// halted for longer than the retention) and a published snapshot covers
// the retention, it stops the node, replaces its database with that
// snapshot (logged) and opens and runs it again. A node that is not
// behind is never touched.
func (s *settings) runNode(ctx context.Context, log *slog.Logger, n *node.Node) error {
	for {
		if !s.BootstrapWhenBehind || s.Bootstrap == bootstrapOff || n.Applier() == nil {
			defer n.Close()
			return n.Run(ctx)
		}
		rctx, cancel := context.WithCancel(ctx)
		found := make(chan snapshot.Record, 1)
		var wg sync.WaitGroup
		wg.Go(func() { s.watchBehind(rctx, log, n, found, cancel) })
		err := n.Run(rctx)
		cancel()
		wg.Wait()
		n.Close()
		var rec snapshot.Record
		select {
		case rec = <-found:
		default:
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("bootstrap: --bootstrap-when-behind: the running node is behind the feed's retention; replacing its database with the latest snapshot",
			"db", s.DB, "snapshot", rec.Manifest, "snapshot_cursor", rec.ControlVersion)
		if err := s.restoreSnapshot(ctx, log, rec, true); err != nil {
			return err
		}
		if n, err = openNode(ctx, log, s.nodeConfig(log)); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// watchBehind checks n every behindCheckInterval; when it is behind the
// retention and the feed's latest snapshot covers it, it sends the record
// on found and stops the node (stop).
func (s *settings) watchBehind(ctx context.Context, log *slog.Logger, n *node.Node, found chan<- snapshot.Record, stop context.CancelFunc) {
	t := time.NewTicker(behindCheckInterval)
	defer t.Stop()
	var seen string // the last record found useless, not to log it again
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cb := n.Applier().Status().BehindRetention
		if cb == nil {
			continue
		}
		rec, err := s.latestSnapshot(ctx)
		if err != nil || !rec.Covers(cb.FirstAvailable) {
			if err == nil && rec.Manifest != seen {
				seen = rec.Manifest
				log.Error("bootstrap: the latest published snapshot does not cover the feed's retention; waiting for a newer one",
					"snapshot", rec.Manifest, "snapshot_cursor", rec.ControlVersion, "first_available", cb.FirstAvailable)
			}
			continue
		}
		found <- rec
		stop()
		return
	}
}
