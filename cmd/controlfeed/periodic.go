package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/feed/nop"
	"github.com/controlfeed/controlfeed/internal/natsconn"
	"github.com/controlfeed/controlfeed/snapshot"
)

// snapshotSettings are serve's flags of the periodic snapshots.
var snapshotSettings = []string{"snapshot-every", "snapshot-interval", "snapshot-keep", "snapshot-signing-key"}

// periodicHelp is the part of serve's help on periodic snapshots.
const periodicHelp = `

Periodic snapshots: with --snapshot-every N and/or --snapshot-interval D a
node takes a snapshot of its database while it keeps applying, publishes it
as the feed's latest (as "controlfeed snapshot publish" does) and then
deletes the published snapshots beyond the newest --snapshot-keep (their
catalog entries, then their artifacts; never the latest). A snapshot is
due once the node's cursor is N events past the feed's latest snapshot
(whichever node published it), or once that snapshot is D old and the
cursor has moved. One node per feed is enough. At start-up serve compares
the cadence with the stream's retention (--nats-max-age, the duplicate
window) and warns about combinations that leave joining or lagging nodes
without a usable snapshot; the node's status ("snapshots") and the metric
controlfeed_snapshot_uncovered show when the feed no longer holds the
events after the latest snapshot.

With --snapshot-signing-key FILE each snapshot's manifest is signed (with
the chain head it covers). A node with --trust-key publishing snapshots
must have one, and the key must be among the --trust-key keys: the nodes
that verify restore only snapshots signed by a key they trust, so an
unsigned one would be useless to them (see docs/SECURITY.md).`

// checkSnapshots rejects periodic snapshot flags that cannot work.
func (s *settings) checkSnapshots(cmd *command) error {
	if s.SnapshotEvery == 0 && s.SnapshotInterval == 0 {
		return nil
	}
	if s.SnapshotInterval < 0 {
		return usageErrorf("controlfeed %s: --snapshot-interval %s: want a positive duration", cmd.name, s.SnapshotInterval)
	}
	if err := s.checkSnapshotKey(cmd); err != nil {
		return err
	}
	if s.FeedSource == "" || s.FeedSource == nop.Name {
		return usageErrorf("controlfeed %s: --snapshot-every/--snapshot-interval need a node (--feed-source file or jetstream): a snapshot is of the state a node applied from the feed", cmd.name)
	}
	return nil
}

// checkSnapshotKey refuses a verifying node (--trust-key) that would
// publish snapshots no verifying node can restore: unsigned ones, or ones
// signed by a key outside its trusted set (the fleet's, as a rule). It
// runs after loadTrust.
func (s *settings) checkSnapshotKey(cmd *command) error {
	if s.keyring == nil {
		return nil
	}
	if s.snapSigner == nil {
		return usageErrorf("controlfeed %s: --snapshot-every/--snapshot-interval with --trust-key but no --snapshot-signing-key: nodes that verify restore only signed snapshots, "+
			"so this node's would be refused by every one of them; give --snapshot-signing-key FILE (controlfeed keys generate) and add its .pub to the fleet's --trust-key (see docs/SECURITY.md)", cmd.name)
	}
	for _, id := range s.keyring.IDs() {
		if id == s.snapSigner.ID() {
			return nil
		}
	}
	return usageErrorf("controlfeed %s: --snapshot-signing-key %s is key %s, which is not among this node's --trust-key keys (%s): nodes that verify would refuse its snapshots; "+
		"add its .pub to the --trust-key of every node (this one included)", cmd.name, s.SnapSigningKey, s.snapSigner.ID(), strings.Join(s.keyring.IDs(), ", "))
}

// snapshotConfig is node.Config.Snapshots, nil without periodic snapshots.
func (s *settings) snapshotConfig(log *slog.Logger) *snapshot.PeriodicConfig {
	if s.SnapshotEvery == 0 && s.SnapshotInterval <= 0 {
		return nil
	}
	keep := s.SnapshotKeep
	if keep == 0 {
		keep = -1 // --snapshot-keep 0: never delete
	}
	return &snapshot.PeriodicConfig{
		Every: s.SnapshotEvery, Interval: s.SnapshotInterval, Keep: keep,
		Create: snapshot.CreateOptions{SigningKey: s.snapSigner},
		Covers: func(ctx context.Context, cursor uint64) (uint64, bool, error) {
			first, behind := s.probeRetention(ctx, log, cursor)
			return first, behind, nil
		},
	}
}

// retention is what bounds a feed's history, as far as serve can tell.
type retention struct {
	MaxAge          time.Duration // 0: unbounded by age
	MaxBytes        int64         // 0: unbounded by size
	DuplicateWindow time.Duration // 0: unknown
}

// cadenceWarnings returns what breaks with this snapshot cadence on a feed
// retained as r: one sentence per problem, empty when none.
func cadenceWarnings(every uint64, interval time.Duration, r retention) []string {
	var w []string
	if every == 0 && interval <= 0 {
		if r.MaxAge > 0 || r.MaxBytes > 0 {
			w = append(w, "the stream is bounded (max age or max bytes) but no node takes periodic snapshots here: unless one is published elsewhere, "+
				"a new node or one offline past the retention cannot catch up; run one node with --snapshot-interval shorter than the max age")
		}
		return w
	}
	if r.MaxAge > 0 && interval >= r.MaxAge {
		w = append(w, fmt.Sprintf("--snapshot-interval %s is not shorter than the stream's max age %s: the latest snapshot can be older than the oldest event the stream holds, "+
			"so a new node, or one offline longer than the max age, may find no snapshot within the retention and cannot catch up until the next one; use an interval well below the max age (a half or less)", interval, r.MaxAge))
	} else if r.MaxAge > 0 && interval > r.MaxAge/2 {
		w = append(w, fmt.Sprintf("--snapshot-interval %s is more than half the stream's max age %s: one failed or late snapshot leaves the latest one outside the retention; prefer a half or less", interval, r.MaxAge))
	}
	if r.MaxAge > 0 && interval <= 0 {
		w = append(w, fmt.Sprintf("--snapshot-every %d without --snapshot-interval on a stream with max age %s: if fewer than %d events arrive within %s, the events after the latest snapshot age out "+
			"before the next snapshot is due and no snapshot covers the retention; add --snapshot-interval shorter than the max age", every, r.MaxAge, every, r.MaxAge))
	}
	if r.MaxBytes > 0 && every == 0 {
		w = append(w, fmt.Sprintf("the stream is bounded by size (max bytes %d) and snapshots are taken by time only: a burst of events can push the events after the latest snapshot out of the stream "+
			"before the next one; add --snapshot-every N with N well below the number of events the stream holds", r.MaxBytes))
	}
	if r.MaxAge > 0 && r.DuplicateWindow > r.MaxAge {
		w = append(w, fmt.Sprintf("the duplicate window %s is longer than the max age %s: JetStream refuses such a stream; a producer retry after the events aged out would publish them again "+
			"(nodes restored from a snapshot still skip them, by the applied events it carries)", r.DuplicateWindow, r.MaxAge))
	}
	return w
}

// warnSnapshotCadence logs cadenceWarnings at start-up, with the stream's
// actual retention when it can be read (jetstream), else the flags.
func (s *settings) warnSnapshotCadence(ctx context.Context, log *slog.Logger) {
	if s.FeedSource == "" || s.FeedSource == nop.Name {
		return
	}
	r := retention{MaxAge: s.NATSMaxAge, MaxBytes: s.NATSMaxBytes, DuplicateWindow: s.NATSDuplicateWindow}
	switch s.FeedSource {
	case natsfeed.Name:
		if got, err := s.streamRetention(ctx); err == nil {
			r = got
		} else {
			log.Debug("snapshots: cannot read the stream's retention; checking the cadence against the flags", "err", err)
		}
	}
	for _, w := range cadenceWarnings(s.SnapshotEvery, s.SnapshotInterval, r) {
		log.Warn("snapshots: " + w)
	}
}

// streamRetention reads the feed stream's limits.
func (s *settings) streamRetention(ctx context.Context) (retention, error) {
	auth := natsconn.Auth{CredsFile: s.NATSCreds, User: s.NATSUser, Password: s.NATSPassword,
		TLSCAFile: s.NATSTLSCA, TLSCertFile: s.NATSTLSCert, TLSKeyFile: s.NATSTLSKey}
	urls := s.natsURLs()
	if len(urls) == 0 {
		urls = []string{nats.DefaultURL}
	}
	timeout := 5 * time.Second
	nc, err := natsconn.Connect("controlfeed", urls, auth, natsconn.Options("controlfeed-retention-check", time.Second, auth, nats.Timeout(timeout), nats.MaxReconnects(0))...)
	if err != nil {
		return retention{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(timeout))
	if err != nil {
		return retention{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	name := s.NATSStream
	if name == "" {
		name = natsfeed.DefaultStream
	}
	st, err := js.Stream(ctx, name)
	if err != nil {
		return retention{}, err
	}
	c := st.CachedInfo().Config
	return retention{MaxAge: c.MaxAge, MaxBytes: c.MaxBytes, DuplicateWindow: c.Duplicates}, nil
}
