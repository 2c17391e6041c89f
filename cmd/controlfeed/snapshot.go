package main

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/dbrole"
	"github.com/controlfeed/controlfeed/feed/nop"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
	"github.com/controlfeed/controlfeed/snapshot"
)

// snapshotStoreSettings are the flags locating the artifact store that
// holds snapshots: the store the node's events' payloads are in.
var snapshotStoreSettings = settingList([]string{"artifact-store", "artifact-dir", "nats-bucket"}, natsSettings)

// snapshotFeedSettings are the flags locating the feed whose catalog
// records published snapshots.
var snapshotFeedSettings = []string{"feed-source", "feed-dir", "nats-stream"}

var snapshotFeedHelp = map[string]flagHelp{
	"feed-source": {usage: "feed backend `NAME` the nodes read (file or jetstream): its snapshot catalog records published snapshots", show: "nop (none: give the nodes' feed)"},
}

var snapshotCreateCmd = &command{
	name:    "snapshot create",
	summary: "copy a node's database into the artifact store (or a file) as a snapshot",
	details: `Takes a transactionally consistent copy of the node database --db (SQLite's
VACUUM INTO, while "serve" may keep applying to it), stores it in the
artifact store (--artifact-store, --artifact-dir or the NATS flags: the
store the node reads its events' payloads from) under its content address,
then stores its manifest (format, schema versions, the cursor it covers,
node, time, size, sha256, the trust chain head), signed with
--snapshot-signing-key when given, and prints the manifest's reference: the
snapshot's name for "snapshot restore --ref" and "snapshot publish --ref".
Nothing in --db changes.

With --out FILE it writes the copy to the new file FILE instead (a complete
node database that a stopped node can use as its --db) and its manifest to
FILE.manifest.json, and stores nothing.

It refuses a producer's database: a snapshot is a node's state and
position in the feed. Progress is printed on stderr for long copies. With
--json it prints the manifest, with its reference as "ref".`,
	example: `controlfeed snapshot create --db node1.db --artifact-dir /var/lib/cf/artifacts`,
	settings: settingList([]string{"db", "out", "json", "node-name", "snapshot-signing-key"}, snapshotStoreSettings,
		[]string{"log-format", "log-level"}),
	override: map[string]flagHelp{
		"db":  {usage: "node database `FILE` to snapshot; must exist, and is only read"},
		"out": {usage: "write the snapshot to the new file `FILE` (and FILE.manifest.json) instead of the artifact store"},
	},
}

var snapshotPublishCmd = &command{
	name:    "snapshot publish",
	summary: "snapshot a node's database and record it as the feed's latest",
	details: `Creates a snapshot of the node database --db as "snapshot create" does (or,
with --ref, takes the stored snapshot REF) and records it as the latest
snapshot of the feed the nodes read (--feed-source with --feed-dir or the
NATS flags), so that a node joining with "serve --bootstrap=auto" restores
it instead of replaying the feed's whole history.

A snapshot is a position in the feed, not a feed event: it covers every
event up to its cursor, and a node restored from it resumes after it.
Publishing adds nothing to the feed. Where it is recorded:
  - file feed: FEED_DIR/.snapshots/latest.json, written atomically, with
    one file per publish in FEED_DIR/.snapshots/history;
  - jetstream: the key "latest" of the key/value bucket
    <stream>_SNAPSHOTS (CONTROLFEED_SNAPSHOTS by default), which the
    producer (serve --feed-sink jetstream) creates; nodes never create it.

The latest never moves backwards: a snapshot older (lower cursor) than the
latest published one is refused. Run it on an up-to-date, healthy node,
for example from cron. Progress is printed on stderr; --json prints the
published record.`,
	example: `controlfeed snapshot publish --db node1.db --feed-source jetstream --nats-url nats://nats1:4222 --artifact-store jetstream`,
	settings: settingList([]string{"db", "ref", "json", "node-name", "snapshot-signing-key"}, snapshotFeedSettings, snapshotStoreSettings,
		[]string{"log-format", "log-level"}),
	override: mergeHelp(snapshotFeedHelp, map[string]flagHelp{
		"db":  {usage: "node database `FILE` to snapshot; must exist, and is only read"},
		"ref": {usage: "publish the stored snapshot whose manifest reference is `REF` instead of creating one"},
	}),
}

var snapshotListCmd = &command{
	name:    "snapshot list",
	summary: "list the snapshots published for a feed, newest first",
	details: `Prints the snapshots recorded in the catalog of the feed (--feed-source with
--feed-dir or the NATS flags), newest (highest cursor) first: cursor,
applied events, size, creation time, source node and manifest reference.
The first is the latest, which "serve --bootstrap=auto" and "snapshot
restore --latest" use. It only reads. With --json it prints a JSON array of
records (manifest, control_version, applied_events, size, node, created_at,
published_at).`,
	example:  `controlfeed snapshot list --feed-source file --feed-dir /var/lib/cf/feed`,
	settings: settingList([]string{"json"}, snapshotFeedSettings, natsSettings, []string{"log-format", "log-level"}),
	override: snapshotFeedHelp,
}

var snapshotRestoreCmd = &command{
	name:    "snapshot restore",
	summary: "replace (or create) a node's database with a snapshot",
	details: `Restores the snapshot --ref REF, or with --latest the feed's latest published
one, into --db: it fetches the database from the artifact store, verifies
its size and sha256 against the manifest, writes it beside --db, checks it
(SQLite quick_check, controlfeed's tables, schema versions, cursor) and
renames it into place, so --db is at every moment either the old database
or the complete new one. Stop the node first: a database in use is refused.

A new database (missing, empty, or a node that has applied nothing) is
created or replaced. A populated one (a node with applied events, or any
other data) is replaced only with --force, logged; a producer's database
never. A snapshot that this program cannot read (another format, a newer
schema) or that does not match its manifest is refused, changing nothing.

Then start the node on --db with its usual flags and its own --node-name:
it resumes after the snapshot's cursor. --json prints the manifest.

With --trust-key (give the node's own) only a snapshot whose manifest is
signed by one of those keys, and whose database holds the chain head the
signature covers, is restored; an unsigned, unknown-key, altered or
mismatched one is refused, changing nothing. Without it any snapshot is.`,
	example: `controlfeed snapshot restore --db node4.db --latest --feed-source file --feed-dir /var/lib/cf/feed --artifact-dir /var/lib/cf/artifacts`,
	settings: settingList([]string{"db", "ref", "latest", "force", "json", "trust-key"}, snapshotFeedSettings, snapshotStoreSettings,
		[]string{"log-format", "log-level"}),
	override: mergeHelp(snapshotFeedHelp, map[string]flagHelp{
		"db":        {usage: "node database `FILE` to create or replace"},
		"force":     {usage: "replace a populated node database (its state is lost; logged)"},
		"trust-key": {usage: "restore only a snapshot whose manifest is signed by this key (the node's --trust-key set): a public key `FILE` or ID=KEY; repeat the flag"},
		"ref":       {usage: "restore the snapshot whose manifest reference is `REF` (see snapshot list)"},
	}),
	createDB: true,
}

// snapshotCmds are the snapshot subcommands, in help order.
var snapshotCmds = []*command{snapshotCreateCmd, snapshotPublishCmd, snapshotListCmd, snapshotRestoreCmd}

func mergeHelp(ms ...map[string]flagHelp) map[string]flagHelp {
	out := map[string]flagHelp{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func (m *Main) runSnapshot(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageErrorf("controlfeed snapshot: missing subcommand: create, publish, list or restore")
	}
	switch args[0] {
	case "create":
		return m.runSnapshotCreate(ctx, args[1:])
	case "publish":
		return m.runSnapshotPublish(ctx, args[1:])
	case "list":
		return m.runSnapshotList(ctx, args[1:])
	case "restore":
		return m.runSnapshotRestore(ctx, args[1:])
	case "-h", "-help", "--help":
		for _, c := range snapshotCmds {
			fmt.Fprintf(m.Stdout, "  controlfeed %-17s %s\n", c.name, c.summary)
		}
		fmt.Fprintf(m.Stdout, "\nRun \"controlfeed snapshot SUBCOMMAND --help\" for its flags.\n")
		return nil
	default:
		return usageErrorf("controlfeed snapshot: unknown subcommand %q: want create, publish, list or restore", args[0])
	}
}

// openSnapshotSource checks that the database at path is a controlfeed
// database that is not a producer's (reading it read-only, changing
// nothing), then opens it for the copy. The copy needs a read-write
// connection (SQLite opens VACUUM INTO's output with the connection's
// flags); it writes nothing to the database itself.
func openSnapshotSource(ctx context.Context, cmd *command, path string) (*sql.DB, error) {
	ro, err := node.OpenDBReadOnly(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("controlfeed %s: %w", cmd.name, err)
	}
	prod, err := isProducerDB(ctx, ro)
	ro.Close()
	if err != nil {
		return nil, fmt.Errorf("controlfeed %s: %s: %w", cmd.name, path, err)
	}
	if prod {
		return nil, fmt.Errorf("controlfeed %s: refused: %s is a producer's database; a snapshot is a node's state and its position in the feed: "+
			"run it with --db set to a node's database (one that serve --feed-source applies a feed to)", cmd.name, path)
	}
	db, err := sqlitedb.Open(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("controlfeed %s: %w", cmd.name, err)
	}
	return db, nil
}

// isProducerDB reports whether the controlfeed database ro reads is a
// producer's: recorded so (dbrole), or holding outbox rows (kv put writes
// them before any serve records the role).
func isProducerDB(ctx context.Context, ro *sql.DB) (bool, error) {
	role, err := dbrole.Get(ctx, ro)
	if err != nil || role == dbrole.Producer {
		return role == dbrole.Producer, err
	}
	var outbox int64
	if err := ro.QueryRowContext(ctx, `SELECT count(*) FROM controlfeed_outbox`).Scan(&outbox); err != nil {
		return false, err
	}
	return outbox > 0, nil
}

// openSnapshotStore opens the artifact store holding snapshots, as a
// node does (it creates no broker object); the store's warnings go to
// stderr at --log-level.
func (s *settings) openSnapshotStore(cmd *command, stderr io.Writer) (artifact.Store, error) {
	acfg := s.artifactConfig()
	if log, err := s.logger(stderr); err == nil {
		acfg.Logger = log
	}
	store, err := artifact.Open(s.ArtifactStore, acfg)
	if err != nil {
		return nil, s.natsTimeoutHint(cmd, fmt.Errorf("controlfeed %s: %w", cmd.name, err))
	}
	return store, nil
}

// openCatalog opens the snapshot catalog of --feed-source, creating no
// broker object.
func (s *settings) openCatalog(ctx context.Context, cmd *command) (snapshot.Catalog, error) {
	s.defaultReadFeed()
	if s.FeedSource == nop.Name || s.FeedSource == "" {
		return nil, usageErrorf("controlfeed %s: --feed-source %s: snapshots are recorded beside the feed the nodes read; give the nodes' --feed-source "+
			"(file with --feed-dir, or jetstream with --nats-url) (or %s)\n%s", cmd.name, cmp.Or(s.FeedSource, nop.Name), cmd.envName("feed-source"), cmd.usageLine())
	}
	cat, err := snapshot.OpenCatalog(ctx, s.FeedSource, snapshot.CatalogConfig{Feed: s.feedConfig()})
	if err != nil {
		return nil, s.natsTimeoutHint(cmd, fmt.Errorf("controlfeed %s: %w", cmd.name, err))
	}
	return cat, nil
}

func (m *Main) runSnapshotCreate(ctx context.Context, args []string) error {
	var s settings
	if _, err := m.parseDBArgs(snapshotCreateCmd, &s, args, 0, 0); err != nil {
		return helpOK(err)
	}
	if err := s.checkBackends(snapshotCreateCmd); err != nil {
		return err
	}
	db, err := openSnapshotSource(ctx, snapshotCreateCmd, s.DB)
	if err != nil {
		return err
	}
	defer db.Close()
	p := newProgress(m.Stderr, snapshotCreateCmd)
	if err := s.loadTrust(snapshotCreateCmd); err != nil {
		return err
	}
	opts := &snapshot.CreateOptions{Node: s.nodeName(), Progress: p.report, SigningKey: s.snapSigner}
	if s.Out != "" {
		if s.snapSigner != nil {
			return usageErrorf("controlfeed snapshot create: --snapshot-signing-key with --out: a file snapshot is not signed; store it in the artifact store (drop --out)")
		}
		man, err := snapshot.Export(ctx, db, s.Out, opts)
		if err != nil {
			return fmt.Errorf("controlfeed snapshot create: %w", err)
		}
		b, err := man.Encode()
		if err != nil {
			return err
		}
		if err := os.WriteFile(s.Out+".manifest.json", b, 0o644); err != nil {
			return fmt.Errorf("controlfeed snapshot create: the database copy is in %s, but its manifest: %w", s.Out, err)
		}
		if s.JSON {
			return writeManifestJSON(m.Stdout, man)
		}
		fmt.Fprintf(m.Stdout, "wrote %s (%s): cursor %d, %d applied events; manifest in %s.manifest.json\n",
			s.Out, formatBytes(man.Database.Size), man.ControlVersion, man.AppliedEvents, s.Out)
		return nil
	}
	store, err := s.openSnapshotStore(snapshotCreateCmd, m.Stderr)
	if err != nil {
		return err
	}
	defer closeStore(store)
	man, err := snapshot.Create(ctx, db, store, opts)
	if err != nil {
		return s.natsTimeoutHint(snapshotCreateCmd, fmt.Errorf("controlfeed snapshot create: %w", err))
	}
	if s.JSON {
		return writeManifestJSON(m.Stdout, man)
	}
	fmt.Fprintln(m.Stdout, man.Ref)
	fmt.Fprintf(m.Stderr, "controlfeed snapshot create: stored snapshot of %s (%s, cursor %d, %d applied events) in %s\n",
		s.DB, formatBytes(man.Database.Size), man.ControlVersion, man.AppliedEvents, store.Name())
	return nil
}

// manifestJSON is a manifest as the commands print it, with its reference.
type manifestJSON struct {
	Ref string `json:"ref,omitempty"`
	snapshot.Manifest
}

func writeManifestJSON(w io.Writer, man snapshot.Manifest) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(manifestJSON{Ref: man.Ref, Manifest: man})
}

func (m *Main) runSnapshotPublish(ctx context.Context, args []string) error {
	var s settings
	pos, err := snapshotPublishCmd.parse(m, &s, args)
	if err != nil {
		return helpOK(err)
	}
	if len(pos) > 0 {
		return usageErrorf("controlfeed snapshot publish: unexpected argument %q (see --help)", pos[0])
	}
	if s.Ref == "" && s.DB == "" {
		return usageErrorf("controlfeed snapshot publish: give --db (the node database to snapshot) or --ref (a stored snapshot)\n%s", snapshotPublishCmd.usageLine())
	}
	if err := s.checkPostgresDB(snapshotPublishCmd); err != nil {
		return err
	}
	if s.Ref != "" && s.set["db"] {
		return usageErrorf("controlfeed snapshot publish: --db and --ref conflict: --ref publishes a stored snapshot, --db takes a new one")
	}
	if err := s.checkBackends(snapshotPublishCmd); err != nil {
		return err
	}
	if s.Ref != "" && s.SnapSigningKey != "" {
		return usageErrorf("controlfeed snapshot publish: --snapshot-signing-key with --ref: a stored snapshot is published as it was created; take a new, signed one with --db instead")
	}
	if err := s.loadTrust(snapshotPublishCmd); err != nil {
		return err
	}
	if _, err := s.logger(m.Stderr); err != nil {
		return err
	}
	cat, err := s.openCatalog(ctx, snapshotPublishCmd)
	if err != nil {
		return err
	}
	defer closeQuietly(cat)
	store, err := s.openSnapshotStore(snapshotPublishCmd, m.Stderr)
	if err != nil {
		return err
	}
	defer closeStore(store)
	var man snapshot.Manifest
	if s.Ref != "" {
		if man, err = snapshot.Load(ctx, store, s.Ref); err != nil {
			return s.natsTimeoutHint(snapshotPublishCmd, fmt.Errorf("controlfeed snapshot publish: %w", err))
		}
	} else {
		db, err := openSnapshotSource(ctx, snapshotPublishCmd, s.DB)
		if err != nil {
			return err
		}
		defer db.Close()
		p := newProgress(m.Stderr, snapshotPublishCmd)
		if man, err = snapshot.Create(ctx, db, store, &snapshot.CreateOptions{Node: s.nodeName(), Progress: p.report, SigningKey: s.snapSigner}); err != nil {
			return s.natsTimeoutHint(snapshotPublishCmd, fmt.Errorf("controlfeed snapshot publish: %w", err))
		}
	}
	rec := snapshot.RecordOf(man, time.Now())
	if err := cat.Publish(ctx, rec); err != nil {
		return s.natsTimeoutHint(snapshotPublishCmd, fmt.Errorf("controlfeed snapshot publish: the snapshot %s is stored, but publishing it failed: %w", man.Ref, err))
	}
	if s.JSON {
		enc := json.NewEncoder(m.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rec)
	}
	fmt.Fprintf(m.Stdout, "published snapshot %s as the latest of the %s feed: cursor %d, %d applied events, %s\n",
		man.Ref, cat.Name(), man.ControlVersion, man.AppliedEvents, formatBytes(man.Database.Size))
	return nil
}

func (m *Main) runSnapshotList(ctx context.Context, args []string) error {
	var s settings
	pos, err := snapshotListCmd.parse(m, &s, args)
	if err != nil {
		return helpOK(err)
	}
	if len(pos) > 0 {
		return usageErrorf("controlfeed snapshot list: unexpected argument %q (see --help)", pos[0])
	}
	if err := s.checkBackends(snapshotListCmd); err != nil {
		return err
	}
	if _, err := s.logger(m.Stderr); err != nil {
		return err
	}
	cat, err := s.openCatalog(ctx, snapshotListCmd)
	if err != nil {
		return err
	}
	defer closeQuietly(cat)
	rs, err := cat.List(ctx)
	if errors.Is(err, snapshot.ErrNoCatalog) {
		rs, err = nil, nil // nothing was ever published: an empty list
	}
	if err != nil {
		return s.natsTimeoutHint(snapshotListCmd, fmt.Errorf("controlfeed snapshot list: %w", err))
	}
	if s.JSON {
		if rs == nil {
			rs = []snapshot.Record{}
		}
		enc := json.NewEncoder(m.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rs)
	}
	if len(rs) == 0 {
		fmt.Fprintf(m.Stderr, "controlfeed snapshot list: no snapshot published for this %s feed (publish one: controlfeed snapshot publish --db NODE.db ...)\n", cat.Name())
		return nil
	}
	tw := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CURSOR\tAPPLIED\tSIZE\tCREATED\tNODE\tMANIFEST")
	for _, r := range rs {
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\n", r.ControlVersion, r.AppliedEvents, formatBytes(r.Size),
			r.CreatedAt.Format(time.RFC3339), cmp.Or(r.Node, "-"), r.Manifest)
	}
	return tw.Flush()
}

func (m *Main) runSnapshotRestore(ctx context.Context, args []string) error {
	var s settings
	if _, err := m.parseDBArgs(snapshotRestoreCmd, &s, args, 0, 0); err != nil {
		return helpOK(err)
	}
	if (s.Ref == "") == !s.Latest {
		return usageErrorf("controlfeed snapshot restore: give exactly one of --ref REF and --latest\n%s", snapshotRestoreCmd.usageLine())
	}
	if err := s.checkBackends(snapshotRestoreCmd); err != nil {
		return err
	}
	log, err := s.logger(m.Stderr)
	if err != nil {
		return err
	}
	if err := s.loadTrust(snapshotRestoreCmd); err != nil {
		return err
	}
	if err := refuseProducerTarget(ctx, snapshotRestoreCmd, s.DB); err != nil {
		return err
	}
	ref := s.Ref
	if s.Latest {
		cat, err := s.openCatalog(ctx, snapshotRestoreCmd)
		if err != nil {
			return err
		}
		rec, err := cat.Latest(ctx)
		closeQuietly(cat)
		if err != nil {
			return s.natsTimeoutHint(snapshotRestoreCmd, fmt.Errorf("controlfeed snapshot restore --latest: %w", err))
		}
		ref = rec.Manifest
	}
	store, err := s.openSnapshotStore(snapshotRestoreCmd, m.Stderr)
	if err != nil {
		return err
	}
	defer closeStore(store)
	p := newProgress(m.Stderr, snapshotRestoreCmd)
	man, err := snapshot.RestoreRef(ctx, store, ref, s.DB, &snapshot.RestoreOptions{Force: s.Force, Logger: log, Progress: p.report, TrustedKeys: s.keyring})
	if err != nil {
		return s.natsTimeoutHint(snapshotRestoreCmd, restoreError(snapshotRestoreCmd, s.DB, err))
	}
	if s.JSON {
		return writeManifestJSON(m.Stdout, man)
	}
	fmt.Fprintf(m.Stdout, "restored snapshot %s into %s: cursor %d, %d applied events; start the node on it (serve --db %s with its own --node-name): it resumes after %d\n",
		man.Ref, s.DB, man.ControlVersion, man.AppliedEvents, s.DB, man.ControlVersion)
	return nil
}

// refuseProducerTarget refuses to restore a node snapshot over a
// producer's database, whatever --force says: its outbox would be lost.
func refuseProducerTarget(ctx context.Context, cmd *command, path string) error {
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	db, err := node.OpenDBReadOnly(ctx, path)
	if err != nil {
		return nil // not a controlfeed database: Restore's own checks decide
	}
	defer db.Close()
	if prod, err := isProducerDB(ctx, db); err == nil && prod {
		return fmt.Errorf("controlfeed %s: refused: %s is a producer's database (its outbox holds the fleet's changes), and a snapshot is a node's: "+
			"restore into a node's database or a new path", cmd.name, path)
	}
	return nil
}

// restoreError adds to a refusal of Restore what to do in the CLI's terms.
func restoreError(cmd *command, db string, err error) error {
	var hint string
	switch {
	case errors.Is(err, snapshot.ErrUntrusted):
		hint = "nothing was changed: restore a snapshot signed by a key in --trust-key (controlfeed snapshot list; publish one with snapshot publish --snapshot-signing-key), " +
			"or, if the signing key is yours and trusted by the fleet, add its .pub with --trust-key; never drop --trust-key to get past this (docs/SECURITY.md)"
	case errors.Is(err, snapshot.ErrInUse):
		hint = "stop the node using " + db + " (serve), then retry"
	case errors.Is(err, snapshot.ErrPopulated):
		hint = "to replace it anyway (its state is lost), add --force; or restore into a new --db path"
	case errors.Is(err, snapshot.ErrIncompatible):
		hint = "pick another snapshot (controlfeed snapshot list) or upgrade controlfeed"
	case errors.Is(err, snapshot.ErrCorrupt), errors.Is(err, artifact.ErrCorrupt):
		hint = "the snapshot is damaged; nothing was changed: pick another one (controlfeed snapshot list) or publish a new one"
	case errors.Is(err, artifact.ErrNotFound):
		hint = "the artifact store does not hold it: check --artifact-store and --artifact-dir (or --nats-url/--nats-bucket) are the ones the snapshot was created in"
	}
	if hint == "" {
		return fmt.Errorf("controlfeed %s: %w", cmd.name, err)
	}
	return fmt.Errorf("controlfeed %s: %w\n%s", cmd.name, err, strings.TrimSpace(hint))
}
