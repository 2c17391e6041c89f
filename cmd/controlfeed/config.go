package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/controlfeed/controlfeed/fleet"
	"github.com/controlfeed/controlfeed/internal/failpoint"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/kv"
	"github.com/controlfeed/controlfeed/snapshot"
	"github.com/controlfeed/controlfeed/trust"
)

// envPrefix starts the name of every environment variable controlfeed reads.
const envPrefix = "CONTROLFEED_"

// settings holds every value a flag or its environment variable can set. A
// subcommand binds the subset it uses; the rest keep their defaults.
type settings struct {
	DB            string
	DBs           []string // every --db given (prune takes several); DB is the last
	FeedSource    string
	FeedSink      string
	FeedDir       string
	ArtifactStore string
	ArtifactDir   string
	Listen        string
	ListenToken   string // serve
	ListenTLSCert string // serve
	ListenTLSKey  string // serve
	NodeName      string
	NATSURL       string
	NATSTimeout   time.Duration
	LogFormat     string
	LogLevel      string
	PollInterval  time.Duration
	JSON          bool
	From          uint64
	Follow        bool
	Quick         bool   // bench
	PostgresURL   string // bench
	JoinEvents    int    // bench
	JoinKeys      int    // bench
	Out           string // bench
	Only          string // bench
	Through       uint64 // prune
	Force         bool   // prune, snapshot restore
	Ref           string // snapshot publish, restore
	Latest        bool   // snapshot restore

	SigningKey       string   // serve: the producer's signing key file
	SnapSigningKey   string   // serve, snapshot create/publish: the key signing snapshot manifests
	TrustKeys        []string // serve: trusted public keys (files or ID=KEY)
	SecurityOverride bool     // skip
	KeyName          string   // keys generate
	signer           *trust.PrivateKey
	snapSigner       *trust.PrivateKey
	keyring          *trust.Keyring

	Bootstrap           string // serve
	BootstrapWhenBehind bool   // serve
	behindAdvice        string // serve: set by bootstrap, shown with a behind-retention report

	SnapshotEvery    uint64        // serve
	SnapshotInterval time.Duration // serve
	SnapshotKeep     int           // serve

	MaxArtifactBytes int64 // serve, kv put

	UnavailableGrace time.Duration // serve
	StallThreshold   time.Duration // serve

	NATSStream          string
	NATSSubject         string
	NATSReplicas        int
	NATSMaxAge          time.Duration
	NATSMaxBytes        int64
	NATSDuplicateWindow time.Duration
	NATSCreds           string
	NATSUser            string
	NATSPassword        string
	NATSTLSCA           string
	NATSTLSCert         string
	NATSTLSKey          string
	NATSBucket          string
	EmbeddedNATS        bool
	NATSListen          string
	NATSStore           string
	Store               string
	ClusterName         string // nats-server
	ClusterListen       string // nats-server
	Routes              string // nats-server
	ServerName          string // nats-server

	FleetHeartbeat    time.Duration // serve
	AppDigestInterval time.Duration // serve
	StaleAfter        time.Duration // fleet
	LaggingAfter      time.Duration // fleet
	Event             string        // fleet wait
	CV                uint64        // fleet wait
	Timeout           time.Duration // fleet wait
	IncludeStale      bool          // fleet wait

	Nodes    int
	Events   int
	DemoFeed string
	Keep     bool
	Rate     float64

	// set records the flags given on the command line or by environment
	// variable, so a command can tell an explicit value from a default.
	set map[string]bool
}

// setting describes one flag and its environment variable. This table is the
// ONE place where flags, environment variables and defaults are mapped.
type setting struct {
	flag  string // flag name, without dashes
	usage string // one line; the default and env var are appended by help
	def   string // default shown in help ("" = none)
	show  string // overrides def in help when the real default is computed
	bind  func(fs *flag.FlagSet, s *settings, name, usage string)
}

func strSetting(flagName, def, usage string, field func(*settings) *string) setting {
	return setting{flag: flagName, usage: usage, def: def, bind: func(fs *flag.FlagSet, s *settings, name, u string) {
		fs.StringVar(field(s), name, def, u)
	}}
}

func withShow(show string, st setting) setting {
	st.show = show
	return st
}

// dbValue is the flag.Value of --db: each value sets DB (the last one wins,
// as for any flag) and is added to DBs, for commands that take several.
type dbValue struct{ s *settings }

func (v dbValue) String() string {
	if v.s == nil {
		return ""
	}
	return v.s.DB
}

func (v dbValue) Set(path string) error {
	v.s.DB = path
	v.s.DBs = append(v.s.DBs, path)
	return nil
}

var allSettings = []setting{
	{flag: "db", usage: "SQLite database `FILE` of this node or producer (created if missing), or a producer's PostgreSQL URL (postgres://...; see --help)",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.Var(dbValue{s}, name, u) }},
	strSetting("feed-source", "nop", "feed backend this node applies events from (`NAME`; nop = none)",
		func(s *settings) *string { return &s.FeedSource }),
	strSetting("feed-sink", "nop", "feed backend the outbox pump publishes to (`NAME`; nop = none)",
		func(s *settings) *string { return &s.FeedSink }),
	strSetting("feed-dir", "", "`DIR` of the file feed backend, shared by the producer and its nodes",
		func(s *settings) *string { return &s.FeedDir }),
	strSetting("artifact-store", "file", "artifact store backend holding event payloads (`NAME`)",
		func(s *settings) *string { return &s.ArtifactStore }),
	withShow("<db>.artifacts", strSetting("artifact-dir", "", "`DIR` of the file artifact store; nodes must use the producer's",
		func(s *settings) *string { return &s.ArtifactDir })),
	strSetting("listen", "", "HTTP `ADDR` for /healthz, /v1/status and /metrics (empty = no HTTP server; :PORT = 127.0.0.1:PORT; 0.0.0.0:PORT exposes it, see serve --help)",
		func(s *settings) *string { return &s.Listen }),
	withShow("the host name", strSetting("node-name", "", "`NAME` of this node (durable consumer name on jetstream; shown in status)",
		func(s *settings) *string { return &s.NodeName })),
	withShow(defaultNATSURL, strSetting("nats-url", "", "comma-separated NATS server `URLs` for the jetstream backends",
		func(s *settings) *string { return &s.NATSURL })),
	{flag: "nats-timeout", def: "5s", usage: "how long one NATS request (publish, ack, stream or bucket look-up) may take before the command fails with an error naming it (`DURATION`); an artifact upload or download gets this plus 1s per MiB",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.DurationVar(&s.NATSTimeout, name, 0, u) }},
	strSetting("log-format", "text", "log `FORMAT` on stderr: text or json",
		func(s *settings) *string { return &s.LogFormat }),
	strSetting("log-level", "info", "log `LEVEL`: debug, info, warn or error",
		func(s *settings) *string { return &s.LogLevel }),
	{flag: "poll-interval", def: "0 (library default)", usage: "how often the pump and the applier poll when idle (`DURATION`)",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.DurationVar(&s.PollInterval, name, 0, u) }},
	{flag: "unavailable-grace", def: node.DefaultUnavailableGrace.String(), usage: "how long the applier may be unavailable (feed, artifact store or local database failing) before /healthz reports it (`DURATION`)",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.DurationVar(&s.UnavailableGrace, name, 0, u) }},
	{flag: "stall-threshold", def: node.DefaultStallThreshold.String(), usage: "how long the pump and the applier may make no progress (a publish or feed call in flight, an unpublished outbox row, a cursor that does not move while the feed has events) before /healthz reports it (`DURATION`)",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.DurationVar(&s.StallThreshold, name, 0, u) }},
	{flag: "max-artifact-bytes", def: fmt.Sprintf("%d (256 MiB)", kv.DefaultMaxValueBytes),
		usage: "largest artifact (kv value) in `BYTES`: a node halts at a larger one, kv put refuses one; give the producer and every node the same value",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) {
			fs.Int64Var(&s.MaxArtifactBytes, name, kv.DefaultMaxValueBytes, u)
		}},
	{flag: "json", def: "false", usage: "print JSON instead of text",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.BoolVar(&s.JSON, name, false, u) }},
	{flag: "from", def: "0", usage: "print events after this ControlVersion `N`",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.Uint64Var(&s.From, name, 0, u) }},
	strSetting("nats-stream", "", "JetStream stream `NAME` holding the feed (jetstream feed; default CONTROLFEED)",
		func(s *settings) *string { return &s.NATSStream }),
	strSetting("nats-subject", "", "`SUBJECT` the feed's events are published on (jetstream feed; default controlfeed.events)",
		func(s *settings) *string { return &s.NATSSubject }),
	{flag: "nats-replicas", def: "1", usage: "replicas `N` of the feed stream and the artifact bucket: the producer (serve --feed-sink, kv put) creates them with it and refuses existing ones with another count; nodes never create them (3 on a cluster)",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.IntVar(&s.NATSReplicas, name, 0, u) }},
	{flag: "nats-max-age", def: "0 (keep forever)", usage: "feed stream retention by age (`DURATION`); nodes older than it must be re-bootstrapped",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.DurationVar(&s.NATSMaxAge, name, 0, u) }},
	{flag: "nats-max-bytes", def: "0 (unlimited)", usage: "feed stream retention by size (`BYTES`)",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.Int64Var(&s.NATSMaxBytes, name, 0, u) }},
	{flag: "nats-duplicate-window", def: "24h", usage: "how long JetStream deduplicates an EventID (`DURATION`); must outlast producer outages",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) {
			fs.DurationVar(&s.NATSDuplicateWindow, name, 0, u)
		}},
	strSetting("nats-creds", "", "NATS credentials `FILE` (.creds)",
		func(s *settings) *string { return &s.NATSCreds }),
	strSetting("nats-user", "", "NATS `USER` name",
		func(s *settings) *string { return &s.NATSUser }),
	strSetting("nats-password", "", "NATS `PASSWORD` (prefer the environment variable: flags show in ps)",
		func(s *settings) *string { return &s.NATSPassword }),
	strSetting("nats-tls-ca", "", "CA certificate `FILE` that signs the NATS servers' certificates",
		func(s *settings) *string { return &s.NATSTLSCA }),
	strSetting("nats-tls-cert", "", "client certificate `FILE` for NATS TLS (with --nats-tls-key)",
		func(s *settings) *string { return &s.NATSTLSCert }),
	strSetting("nats-tls-key", "", "client key `FILE` for NATS TLS (with --nats-tls-cert)",
		func(s *settings) *string { return &s.NATSTLSKey }),
	strSetting("nats-bucket", "", "JetStream Object Store `BUCKET` of the jetstream artifact store (default controlfeed-artifacts)",
		func(s *settings) *string { return &s.NATSBucket }),
	{flag: "embedded-nats", def: "false", usage: "run a NATS JetStream server inside this process and use it (see serve --help)",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.BoolVar(&s.EmbeddedNATS, name, false, u) }},
	withShow("127.0.0.1:4222", strSetting("nats-listen", "", "client `ADDR` of the embedded NATS server (port 0 = random)",
		func(s *settings) *string { return &s.NATSListen })),
	withShow("<db>.nats", strSetting("nats-store", "", "JetStream store `DIR` of the embedded NATS server",
		func(s *settings) *string { return &s.NATSStore })),
	strSetting("store", "", "JetStream store `DIR` of the NATS server (required)",
		func(s *settings) *string { return &s.Store }),
	strSetting("cluster-name", "", "`NAME` of the NATS cluster this server is a member of, the same on every member (with --cluster-listen)",
		func(s *settings) *string { return &s.ClusterName }),
	strSetting("cluster-listen", "", "`ADDR` this server accepts routes from the other cluster members on (empty = not clustered)",
		func(s *settings) *string { return &s.ClusterListen }),
	strSetting("routes", "", "comma-separated route `URLs` of the cluster members, nats-route://host:port (its own may be included)",
		func(s *settings) *string { return &s.Routes }),
	withShow("controlfeed", strSetting("server-name", "", "`NAME` of this NATS server, unique in its cluster",
		func(s *settings) *string { return &s.ServerName })),
	{flag: "nodes", def: "3", usage: "number `N` of fleet nodes",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.IntVar(&s.Nodes, name, 3, u) }},
	{flag: "events", def: "3000", usage: "number `N` of changes to publish",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.IntVar(&s.Events, name, 3000, u) }},
	strSetting("feed", "jetstream", "feed and artifact backends: `NAME` jetstream (embedded server) or file (temp directory)",
		func(s *settings) *string { return &s.DemoFeed }),
	{flag: "keep", def: "false", usage: "keep the demo's data directory and print its path",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.BoolVar(&s.Keep, name, false, u) }},
	{flag: "rate", def: "0 (as fast as possible)", usage: "changes per second `N` the producer makes",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.Float64Var(&s.Rate, name, 0, u) }},
	{flag: "quick", def: "false", usage: "bench: smaller sizes (100k-event RSS catch-up), under a minute",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.BoolVar(&s.Quick, name, false, u) }},
	{flag: "join-events", def: "1000000 (quick: 100000)", usage: "bench: events `N` of the join measurement (a new node by snapshot vs by replay)",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.IntVar(&s.JoinEvents, name, 0, u) }},
	{flag: "join-keys", def: "100000 (quick: 10000)", usage: "bench: keys `N` the join measurement's events cycle over",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.IntVar(&s.JoinKeys, name, 0, u) }},
	strSetting("only", "", "bench: run only the measurements whose names start with one of these comma-separated `PREFIXES` (pump, pgpump, apply, e2e, file, rss, sign, join)",
		func(s *settings) *string { return &s.Only }),
	strSetting("out", "", "bench: also write the report as JSON to `FILE`",
		func(s *settings) *string { return &s.Out }),
	strSetting("postgres-url", "", "bench: also measure the pump on the PostgreSQL server at `URL` (postgres://user@host/db; schemas are created there and dropped)",
		func(s *settings) *string { return &s.PostgresURL }),
	{flag: "through", usage: "prune: delete the feed's events at positions up to and including `N`",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.Uint64Var(&s.Through, name, 0, u) }},
	{flag: "force", def: "false", usage: "prune: prune even past what the nodes given with --db have applied",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.BoolVar(&s.Force, name, false, u) }},
	strSetting("ref", "", "snapshot: the manifest reference `REF` (sha256:...) of a snapshot, as printed by snapshot create or list",
		func(s *settings) *string { return &s.Ref }),
	{flag: "latest", def: "false", usage: "snapshot restore: restore the latest snapshot published for the feed",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.BoolVar(&s.Latest, name, false, u) }},
	strSetting("bootstrap", "auto", "serve: `MODE` auto (a node whose database is new restores the feed's latest published snapshot before applying) or off (replay the feed from the start)",
		func(s *settings) *string { return &s.Bootstrap }),
	{flag: "bootstrap-when-behind", def: "false", usage: "serve: a node behind the feed's retention replaces its database with the latest published snapshot that covers the retention, at start-up (logged)",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) {
			fs.BoolVar(&s.BootstrapWhenBehind, name, false, u)
		}},
	strSetting("signing-key", "", "serve (producer): sign every published event with the private key `FILE` written by \"controlfeed keys generate\" (must not be readable by group or others)",
		func(s *settings) *string { return &s.SigningKey }),
	strSetting("snapshot-signing-key", "", "serve (node with --snapshot-every/--snapshot-interval), snapshot create/publish: sign each snapshot's manifest with the private key `FILE` (\"controlfeed keys generate\"); nodes with --trust-key restore only snapshots signed by a key they trust",
		func(s *settings) *string { return &s.SnapSigningKey }),
	{flag: "trust-key", usage: "serve (node): trust events signed by this key and refuse all others: a public key `FILE` (.pub from \"controlfeed keys generate\") or ID=KEY; repeat the flag, or separate entries with commas in the variable",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.Var(trustKeysValue{s}, name, u) }},
	{flag: "security-override", def: "false", usage: "skip: pass an event the node refused on signature or chain verification (a security halt); logged",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.BoolVar(&s.SecurityOverride, name, false, u) }},
	strSetting("name", "controlfeed", "keys generate: base `NAME` of the key files (NAME.key, NAME.pub)",
		func(s *settings) *string { return &s.KeyName }),
	{flag: "fleet-heartbeat", def: fleet.DefaultHeartbeat.String(), usage: "serve: a node writes its fleet report (see controlfeed fleet) on change, at most every second, and at least every `DURATION`; 0 = the default",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.DurationVar(&s.FleetHeartbeat, name, 0, u) }},
	{flag: "app-digest-interval", def: node.DefaultAppDigestInterval.String(), usage: "serve: least time between two computations of the application's digest (kv: a read of its whole table) for /v1/status and the fleet report (`DURATION`); 0 = the default",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.DurationVar(&s.AppDigestInterval, name, 0, u) }},
	{flag: "stale-after", def: fleet.DefaultStaleAfter.String(), usage: "fleet: a node whose last report is older than `DURATION` is stale (give at least 3 times the nodes' --fleet-heartbeat)",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) {
			fs.DurationVar(&s.StaleAfter, name, fleet.DefaultStaleAfter, u)
		}},
	{flag: "lagging-after", def: fleet.DefaultLaggingAfter.String(), usage: "fleet: a node behind the head is lagging (not applying) once the oldest event it has not applied is older than `DURATION`",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) {
			fs.DurationVar(&s.LaggingAfter, name, fleet.DefaultLaggingAfter, u)
		}},
	strSetting("event", "", "fleet wait: the event `ID` to wait for (as kv put prints it)",
		func(s *settings) *string { return &s.Event }),
	{flag: "cv", usage: "fleet wait, fleet event: the event's ControlVersion `N` (its position in the feed)",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.Uint64Var(&s.CV, name, 0, u) }},
	{flag: "timeout", def: "5m", usage: "fleet wait: give up after `DURATION` and name the nodes that have not applied the event",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) {
			fs.DurationVar(&s.Timeout, name, 5*time.Minute, u)
		}},
	{flag: "include-stale", def: "false", usage: "fleet wait: also wait for stale nodes (by default a node silent for --stale-after is left out, and named)",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.BoolVar(&s.IncludeStale, name, false, u) }},
	{flag: "snapshot-every", def: "0 (off)", usage: "serve: a node takes and publishes a snapshot of its database once it is `N` events past the feed's latest published snapshot",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.Uint64Var(&s.SnapshotEvery, name, 0, u) }},
	{flag: "snapshot-interval", def: "0 (off)", usage: "serve: a node takes and publishes a snapshot once the feed's latest published one is `DURATION` old and it has applied events since",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.DurationVar(&s.SnapshotInterval, name, 0, u) }},
	{flag: "snapshot-keep", def: "3", usage: "serve: with --snapshot-every/--snapshot-interval, keep the newest `N` published snapshots and delete older ones (catalog entries and artifacts; never the latest; 0 keeps all)",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) {
			fs.IntVar(&s.SnapshotKeep, name, snapshot.DefaultKeep, u)
		}},
	{flag: "follow", def: "true", usage: "keep waiting for new events (--follow=false: print what exists and exit)",
		bind: func(fs *flag.FlagSet, s *settings, name, u string) { fs.BoolVar(&s.Follow, name, true, u) }},
}

// natsSettings are the flags of every command that connects to NATS.
var natsSettings = []string{"nats-url", "nats-timeout", "nats-creds", "nats-user", "nats-password",
	"nats-tls-ca", "nats-tls-cert", "nats-tls-key"}

// natsFeedSettings are the flags of the jetstream feed.
var natsFeedSettings = []string{"nats-stream", "nats-subject", "nats-replicas", "nats-max-age",
	"nats-max-bytes", "nats-duplicate-window"}

// settingList concatenates lists of setting names.
func settingList(lists ...[]string) []string {
	var all []string
	for _, l := range lists {
		all = append(all, l...)
	}
	return all
}

// envName returns the environment variable of a flag: --feed-dir ->
// CONTROLFEED_FEED_DIR.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func lookupSetting(name string) setting {
	for _, st := range allSettings {
		if st.flag == name {
			return st
		}
	}
	panic("controlfeed: no setting " + name)
}

// validEnvNames returns the sorted names of every environment variable of
// controlfeed's settings: the ones help lists.
func validEnvNames() []string {
	names := make([]string, 0, len(allSettings))
	for _, st := range allSettings {
		names = append(names, envName(st.flag))
	}
	for _, c := range commands {
		for _, env := range c.env {
			names = append(names, env)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// testOnlyEnvNames are read by package failpoint at start-up, for the crash
// tests: accepted by checkEnv, and not shown to users.
var testOnlyEnvNames = []string{failpoint.EnvSpec, failpoint.EnvLog}

// testEnvPrefixes mark variables of the test suites (the chaos suite's
// CONTROLFEED_CHAOS_LONG, the PostgreSQL tests' CONTROLFEED_TEST_POSTGRES_URL
// exported by .ci/run, ...). They reach controlfeed processes that the
// suites start and are none of controlfeed's settings, so checkEnv lets them
// pass.
var testEnvPrefixes = []string{envPrefix + "CHAOS_", envPrefix + "TEST_"}

func isTestEnv(k string) bool {
	for _, p := range testEnvPrefixes {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

// checkEnv rejects CONTROLFEED_* variables that name no setting: a typo must
// not silently fall back to a default.
func checkEnv(environ []string) error {
	valid := validEnvNames()
	var unknown []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, envPrefix) && !isTestEnv(k) && !slices.Contains(valid, k) &&
			!slices.Contains(testOnlyEnvNames, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	return usageErrorf("unknown environment variable %s; valid ones are: %s",
		strings.Join(unknown, ", "), strings.Join(valid, ", "))
}

// command describes one subcommand for its FlagSet and its help.
type command struct {
	name     string // "serve", "kv put"
	args     string // positional arguments, for the usage line
	summary  string // one line, for the top-level help
	details  string // paragraphs explaining what it does
	example  string // shell example
	settings []string
	createDB bool // the command creates --db if missing; others require it
	// env replaces, for this command only, the environment variable of
	// some settings (flag name -> variable), where the shared one means
	// something else (nats-server's --listen is not serve's HTTP listener).
	env map[string]string
	// override replaces, for this command only, the usage line and the
	// default shown in help of some settings (same flag and variable, a
	// meaning specific to the command).
	override map[string]flagHelp
}

// flagHelp is a command's own usage line and shown default of a setting.
type flagHelp struct{ usage, show string }

// help returns the usage and shown default of setting name in c.
func (c *command) help(name string) (usage, show string) {
	st := lookupSetting(name)
	if o, ok := c.override[name]; ok {
		return o.usage, o.show
	}
	return st.usage, cmp.Or(st.show, st.def)
}

// envName returns the environment variable of setting name in c.
func (c *command) envName(name string) string {
	if env, ok := c.env[name]; ok {
		return env
	}
	return envName(name)
}

// flagSet builds cmd's FlagSet bound to s. It prints nothing: parse writes
// the help (writeHelp) or a one-line usage error.
func (c *command) flagSet(s *settings) *flag.FlagSet {
	fs := flag.NewFlagSet("controlfeed "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for _, name := range c.settings {
		usage, _ := c.help(name)
		lookupSetting(name).bind(fs, s, name, usage)
	}
	fs.Usage = func() {} // parse prints the help for --help, and one line for an error
	return fs
}

func (c *command) writeHelp(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: %s\n\n", strings.TrimSpace("controlfeed "+c.name+" [flags] "+c.args))
	fmt.Fprintf(w, "%s\n\n", strings.TrimSpace(c.details))
	if len(c.settings) > 0 {
		fmt.Fprintf(w, "Flags (each can also be set by its environment variable; a flag overrides it):\n")
		fs.VisitAll(func(f *flag.Flag) {
			_, def := c.help(f.Name)
			argName, usage := flag.UnquoteUsage(f)
			fmt.Fprintf(w, "  --%s", f.Name)
			if argName != "" && argName != "value" {
				fmt.Fprintf(w, " %s", argName)
			}
			fmt.Fprintf(w, "\n      %s\n      env %s", usage, c.envName(f.Name))
			if def != "" {
				fmt.Fprintf(w, ", default %s", def)
			}
			fmt.Fprintln(w)
		})
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "Example:\n  %s\n", strings.TrimSpace(c.example))
}

// parse applies the environment, then the flags in args (flags win), and
// returns the positional arguments. Flags may follow positional arguments
// ("kv get KEY --db FILE"); everything after "--" is positional. It returns
// flag.ErrHelp, after printing the help, for -h/--help.
func (c *command) parse(m *Main, s *settings, args []string) ([]string, error) {
	fs := c.flagSet(s)
	for _, name := range c.settings {
		env := c.envName(name)
		v, ok := m.lookupEnv(env)
		if !ok {
			continue
		}
		if err := fs.Set(name, v); err != nil {
			return nil, usageErrorf("controlfeed %s: environment %s=%q: %v", c.name, env, v, err)
		}
	}
	envDBs := s.DBs // a --db flag replaces CONTROLFEED_DB, as flags override their variable
	s.DBs = nil
	envTrust := s.TrustKeys // likewise --trust-key and CONTROLFEED_TRUST_KEY
	s.TrustKeys = nil
	var pos []string
	for rest := args; len(rest) > 0; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				c.writeHelp(m.Stdout, fs)
				return nil, flag.ErrHelp
			}
			return nil, c.flagError(err)
		}
		left := fs.Args()
		if n := len(rest) - len(left); n > 0 && rest[n-1] == "--" {
			pos = append(pos, left...)
			break
		}
		if len(left) > 0 {
			pos = append(pos, left[0])
			left = left[1:]
		}
		rest = left
	}
	if len(s.DBs) == 0 {
		s.DBs = envDBs
	}
	if len(s.TrustKeys) == 0 {
		s.TrustKeys = envTrust
	}
	s.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { s.set[f.Name] = true })
	return pos, nil
}

// flagError turns an error of the flag package into a usage error of two
// lines: the problem in the command's words, then the usage line and where
// to find the flags.
func (c *command) flagError(err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		msg = "unknown flag --" + strings.TrimPrefix(name, "-")
	}
	return usageErrorf("controlfeed %s: %s\n%s", c.name, msg, c.usageLine())
}

// usageLine is the one-line reminder printed after a usage error.
func (c *command) usageLine() string {
	return fmt.Sprintf("usage: %s; run 'controlfeed %s --help' for the flags",
		strings.TrimSpace("controlfeed "+c.name+" [flags] "+c.args), c.name)
}

// logger builds the slog logger that writes to stderr from --log-format and
// --log-level.
func (s *settings) logger(stderr io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(s.LogLevel)); err != nil {
		return nil, usageErrorf("controlfeed: --log-level %q: want debug, info, warn or error", s.LogLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch s.LogFormat {
	case "text":
		return slog.New(slog.NewTextHandler(stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(stderr, opts)), nil
	default:
		return nil, usageErrorf("controlfeed: --log-format %q: want text or json", s.LogFormat)
	}
}

// quietLogger is the logger of chatty in-process components (an embedded
// NATS server's dozen start-up notices, the demo's nodes): their Info lines
// show only with --log-level debug; warnings and errors always do.
func (s *settings) quietLogger(stderr io.Writer, log *slog.Logger) *slog.Logger {
	if s.LogLevel == "debug" {
		return log
	}
	quiet := *s
	quiet.LogLevel = "warn"
	l, err := quiet.logger(stderr)
	if err != nil {
		return log
	}
	return l
}

// artifactDir resolves the documented default of --artifact-dir.
func (s *settings) artifactDir() string {
	if s.ArtifactDir == "" && s.DB != "" && !node.IsPostgresURL(s.DB) {
		return s.DB + ".artifacts"
	}
	return s.ArtifactDir
}

// nodeName resolves the documented default of --node-name.
func (s *settings) nodeName() string {
	if s.NodeName != "" {
		return s.NodeName
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "controlfeed"
	}
	return h
}

// natsURLs splits --nats-url.
func (s *settings) natsURLs() []string {
	var urls []string
	for u := range strings.SplitSeq(s.NATSURL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	return urls
}

// checkMaxArtifactBytes rejects a --max-artifact-bytes that is not a
// positive number of bytes.
func (s *settings) checkMaxArtifactBytes(cmd *command) error {
	if s.MaxArtifactBytes <= 0 {
		return usageErrorf("controlfeed %s: --max-artifact-bytes %d: want a positive number of bytes (default %d)",
			cmd.name, s.MaxArtifactBytes, kv.DefaultMaxValueBytes)
	}
	return nil
}

// usageError is an error in the command line or environment; main exits 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// helpOK turns the flag.ErrHelp of a --help request, already answered, into
// success.
func helpOK(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

// closeQuietly closes v if it is an io.Closer, ignoring the error: for
// read-only resources on the way out.
func closeQuietly(v any) {
	if c, ok := v.(io.Closer); ok {
		c.Close()
	}
}

// parseDBArgs parses cmd's flags and checks --db, the log settings and the
// number of positional arguments, which it returns.
func (m *Main) parseDBArgs(cmd *command, s *settings, args []string, minArgs, maxArgs int) ([]string, error) {
	pos, err := cmd.parse(m, s, args)
	if err != nil {
		return nil, err
	}
	if len(pos) < minArgs || len(pos) > maxArgs {
		want := cmd.args
		if want == "" {
			want = "none"
		}
		return nil, usageErrorf("controlfeed %s: want arguments %s, got %q (see --help)", cmd.name, want, pos)
	}
	if s.DB == "" {
		return nil, usageErrorf("controlfeed %s: --db is required (or CONTROLFEED_DB)", cmd.name)
	}
	if _, err := s.logger(m.Stderr); err != nil {
		return nil, err
	}
	if err := s.checkPostgresDB(cmd); err != nil {
		return nil, err
	}
	if !cmd.createDB && !node.IsPostgresURL(s.DB) {
		if _, err := os.Stat(s.DB); err != nil {
			return nil, fmt.Errorf("controlfeed %s: database %s: %w", cmd.name, s.DB, err)
		}
	}
	return pos, nil
}
