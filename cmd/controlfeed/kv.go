package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/dbrole"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
	"github.com/controlfeed/controlfeed/kv"
)

var kvPutCmd = &command{
	name:    "kv put",
	args:    "KEY VALUE | KEY -",
	summary: "set a key on the producer and queue the change for publishing",
	details: `Sets KEY to VALUE in the kv table of --db. With "-" instead of VALUE the
value is read from standard input (an empty value is "" on the command
line). The value is stored in the artifact store first; then the row and an
outbox event commit in one transaction, and the event id is printed. A
"serve --feed-sink" running on the same database publishes it within its
poll interval. --db is created if missing; the other commands except serve
require it to exist. A node's database (one that "serve --feed-source" has
applied a feed to) is refused (exit status 1): write on the producer's.

A value larger than --max-artifact-bytes is refused before anything is
stored or committed (exit status 1): nodes halt at an artifact larger than
their own --max-artifact-bytes, so give the producer and every node the
same limit. From standard input, at most that many bytes (plus one) are
read.

Give kv put the artifact store the producer's "serve --feed-sink" publishes
from (--artifact-store, --artifact-dir or --nats-bucket): nodes fetch the
value from that store. Once such a serve has run on --db, it has recorded
its store there, and another one is refused before anything is stored or
committed (exit status 1), naming both stores and the flags to give.` + postgresHelp,
	example:  `controlfeed kv put --db producer.db --artifact-dir /var/lib/cf/artifacts tenant/42/plan pro`,
	settings: kvWriteSettings,
	createDB: true,
}

// kvWriteSettings are the flags of "kv put" and "kv delete": the same, so
// that one set of flags or variables serves every write.
var kvWriteSettings = settingList([]string{"db", "artifact-store", "artifact-dir", "max-artifact-bytes"}, natsSettings,
	[]string{"nats-bucket", "nats-replicas", "log-format", "log-level"})

var kvGetCmd = &command{
	name:    "kv get",
	args:    "KEY",
	summary: "print a key's value (exit status 1 if it does not exist)",
	details: `Prints the value of KEY from the kv table of --db, followed by a newline
unless the value already ends with one. A missing key is an error (exit
status 1).` + postgresHelp,
	example:  `controlfeed kv get --db node1.db tenant/42/plan`,
	settings: []string{"db", "log-format", "log-level"},
	override: readOnlyDB,
}

var kvDeleteCmd = &command{
	name:    "kv delete",
	args:    "KEY",
	summary: "delete a key on the producer and queue the change for publishing",
	details: `Deletes KEY from the kv table of --db and, in the same transaction, appends
an outbox event, whose id is printed. Deleting a key that does not exist
changes nothing, publishes nothing and succeeds. A node's database is
refused, as by "kv put". A delete stores no
artifact: it accepts kv put's artifact and NATS flags (and their variables)
so that one set serves both, and does not use them.` + postgresHelp,
	example:  `controlfeed kv delete --db producer.db tenant/42/plan`,
	settings: kvWriteSettings,
}

var kvListCmd = &command{
	name:    "kv list",
	summary: "print every key and value",
	details: `Prints the kv table of --db sorted by key, one "KEY<TAB>VALUE" line each. A
value that is not printable on one line (newline, tab, other control
characters, invalid UTF-8) is printed as a double-quoted Go string. With
--json, prints one JSON array of {"key","value","version","updated_at"}.` + postgresHelp,
	example:  `controlfeed kv list --db node1.db --json`,
	settings: []string{"db", "json", "log-format", "log-level"},
	override: readOnlyDB,
}

func (m *Main) runKV(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageErrorf("controlfeed kv: missing subcommand: put, get, delete or list")
	}
	switch args[0] {
	case "put":
		return m.runKVPut(ctx, args[1:])
	case "get":
		return m.runKVGet(ctx, args[1:])
	case "delete":
		return m.runKVDelete(ctx, args[1:])
	case "list":
		return m.runKVList(ctx, args[1:])
	case "-h", "-help", "--help":
		for _, c := range []*command{kvPutCmd, kvGetCmd, kvDeleteCmd, kvListCmd} {
			fmt.Fprintf(m.Stdout, "  controlfeed %-10s %s\n", c.name, c.summary)
		}
		fmt.Fprintf(m.Stdout, "\nRun \"controlfeed kv SUBCOMMAND --help\" for its flags.\n")
		return nil
	default:
		return usageErrorf("controlfeed kv: unknown subcommand %q: want put, get, delete or list", args[0])
	}
}

func (m *Main) runKVPut(ctx context.Context, args []string) error {
	var s settings
	pos, err := m.parseDBArgs(kvPutCmd, &s, args, 1, 2)
	if err != nil {
		return helpOK(err)
	}
	key := pos[0]
	if err := kv.ValidateKey(key); err != nil {
		return usageErrorf("controlfeed kv put: %v", err)
	}
	if len(pos) == 1 {
		return usageErrorf("controlfeed kv put %q: no value: give VALUE, or \"-\" to read it from standard input (see --help)", key)
	}
	if err := s.checkMaxArtifactBytes(kvPutCmd); err != nil {
		return err
	}
	if err := s.checkBackends(kvPutCmd); err != nil {
		return err
	}
	log, err := s.logger(m.Stderr)
	if err == nil {
		s.logDefaultNATSURL(kvPutCmd, log)
	}
	value, err := m.kvPutValue(key, pos[1], s.MaxArtifactBytes)
	if err != nil {
		return err
	}
	if err := refuseNodeDB(ctx, kvPutCmd, s.DB); err != nil {
		return err
	}
	db, err := s.openProducerDB(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := s.checkPumpStore(ctx, kvPutCmd, fmt.Sprintf("kv put %q", key), db); err != nil {
		return err
	}
	acfg := s.artifactConfig()
	acfg.NATS.Create = true // kv put writes artifacts: the producer's side
	acfg.Logger = log       // a damaged object replaced, an upload sent again
	store, err := artifact.Open(s.ArtifactStore, acfg)
	if err != nil {
		return s.natsTimeoutHint(kvPutCmd, err)
	}
	defer closeStore(store)
	ev, err := kv.PutLimit(ctx, db, store, key, value, s.MaxArtifactBytes)
	if err != nil {
		return s.natsTimeoutHint(kvPutCmd, nodeDBError(kvPutCmd, s.DB, err))
	}
	fmt.Fprintln(m.Stdout, ev.EventID)
	return nil
}

// kvPutValue returns the value of "kv put KEY arg": arg itself, or standard
// input for "-". It refuses a value larger than limit, reading at most
// limit+1 bytes of standard input to find out, so a huge input costs no more
// memory than the largest acceptable value.
func (m *Main) kvPutValue(key, arg string, limit int64) ([]byte, error) {
	tooLarge := func(size string) error {
		return fmt.Errorf("controlfeed kv put %q: the value is %s, larger than --max-artifact-bytes %d (%s): "+
			"nodes would halt at it; nothing was stored (raise --max-artifact-bytes here and on every node, or store less)",
			key, size, limit, formatBytes(limit))
	}
	if arg != "-" {
		if int64(len(arg)) > limit {
			return nil, tooLarge(fmt.Sprintf("%d bytes", len(arg)))
		}
		return []byte(arg), nil
	}
	value, over, err := readAtMost(m.Stdin, limit)
	if err != nil {
		return nil, fmt.Errorf("controlfeed kv put %q: read value from stdin: %w", key, err)
	}
	if over {
		return nil, tooLarge(fmt.Sprintf("more than %d bytes (standard input was not read further)", limit))
	}
	return value, nil
}

// readAtMost reads r to its end if it holds at most limit bytes, and
// returns over == true, having read limit+1 bytes and no more, if it holds
// more. It reads into chunks and joins them once at the end, so a refused
// input costs about limit bytes of memory, not the doublings of io.ReadAll.
func readAtMost(r io.Reader, limit int64) (b []byte, over bool, err error) {
	lr := io.LimitReader(r, limit+1)
	var chunks [][]byte
	var total int64
	for size := 64 << 10; ; size = min(2*size, 8<<20) {
		c := make([]byte, min(int64(size), limit+1-total))
		n, err := io.ReadFull(lr, c)
		if n > 0 {
			chunks = append(chunks, c[:n])
			total += int64(n)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || total > limit {
			break
		}
		if err != nil {
			return nil, false, err
		}
	}
	if total > limit {
		return nil, true, nil
	}
	if len(chunks) == 1 {
		return chunks[0], false, nil
	}
	b = make([]byte, 0, total)
	for i, c := range chunks {
		b = append(b, c...)
		chunks[i] = nil
	}
	return b, false, nil
}

// formatBytes formats n bytes for a message: "256 MiB", "1.5 KiB", "12 B".
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	s := strconv.FormatFloat(v, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + string("KMGTP"[exp]) + "iB"
}

func (m *Main) runKVGet(ctx context.Context, args []string) error {
	var s settings
	db, pos, err := m.openReadOnlyArgs(ctx, kvGetCmd, &s, args, 1, 1)
	if err != nil {
		return helpOK(err)
	}
	defer db.Close()
	e, ok, err := kv.Get(ctx, db, pos[0])
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("controlfeed kv get %q: no such key in %s", pos[0], node.RedactDB(s.DB))
	}
	m.Stdout.Write(e.Value)
	if len(e.Value) == 0 || e.Value[len(e.Value)-1] != '\n' {
		fmt.Fprintln(m.Stdout)
	}
	return nil
}

func (m *Main) runKVDelete(ctx context.Context, args []string) error {
	var s settings
	pos, err := m.parseDBArgs(kvDeleteCmd, &s, args, 1, 1)
	if err != nil {
		return helpOK(err)
	}
	if err := s.checkBackends(kvDeleteCmd); err != nil {
		return err
	}
	if err := refuseNodeDB(ctx, kvDeleteCmd, s.DB); err != nil {
		return err
	}
	db, err := s.openProducerDB(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	ev, existed, err := kv.Delete(ctx, db, pos[0])
	if err != nil {
		return nodeDBError(kvDeleteCmd, s.DB, err)
	}
	if !existed {
		fmt.Fprintf(m.Stderr, "controlfeed kv delete %q: no such key; nothing to publish\n", pos[0])
		return nil
	}
	fmt.Fprintln(m.Stdout, ev.EventID)
	return nil
}

// refuseNodeDB returns nodeDBError's refusal if the existing database at
// path is a node's, before anything migrates or writes it. Anything else (a
// missing path, which the command creates, or a file it cannot open) is left
// to the command. It opens the database as the command will (sqlitedb.Open),
// not read-only: as the last connection to close, it removes the -wal and
// -shm files that a read-only reader would leave behind.
func refuseNodeDB(ctx context.Context, cmd *command, path string) error {
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	db, err := sqlitedb.Open(ctx, path)
	if err != nil {
		return nil
	}
	defer db.Close()
	err = dbrole.CheckLocalWrite(ctx, db)
	if errors.Is(err, dbrole.ErrNodeDatabase) {
		return nodeDBError(cmd, path, err)
	}
	return nil
}

// nodeDBError rewords a refusal of dbrole.ErrNodeDatabase in the command's
// terms; other errors are returned as they are.
func nodeDBError(cmd *command, path string, err error) error {
	if !errors.Is(err, dbrole.ErrNodeDatabase) {
		return err
	}
	return fmt.Errorf("controlfeed %s: refused: %s is a node's database (it applies a feed: serve --feed-source); "+
		"a local write there would make this node differ from its producer and would never be published; "+
		"run the command with --db set to the producer's database: %w", cmd.name, path, dbrole.ErrNodeDatabase)
}

// kvJSON is one element of "kv list --json".
type kvJSON struct {
	Key       string    `json:"key"`
	Value     string    `json:"value"`
	Version   int64     `json:"version"`
	UpdatedAt time.Time `json:"updated_at"`
}

func (m *Main) runKVList(ctx context.Context, args []string) error {
	var s settings
	db, _, err := m.openReadOnlyArgs(ctx, kvListCmd, &s, args, 0, 0)
	if err != nil {
		return helpOK(err)
	}
	defer db.Close()
	entries, err := kv.List(ctx, db)
	if err != nil {
		return err
	}
	if s.JSON {
		out := make([]kvJSON, 0, len(entries))
		for _, e := range entries {
			out = append(out, kvJSON{Key: e.Key, Value: string(e.Value), Version: e.Version, UpdatedAt: e.UpdatedAt})
		}
		enc := json.NewEncoder(m.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	for _, e := range entries {
		fmt.Fprintf(m.Stdout, "%s\t%s\n", printable(e.Key), printable(string(e.Value)))
	}
	return nil
}

// printable returns s, or s as a quoted Go string when it would break a
// "KEY<TAB>VALUE" line or a terminal.
func printable(s string) string {
	if !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) ||
		strings.HasPrefix(s, `"`) {
		return strconv.Quote(s)
	}
	return s
}

func closeStore(s artifact.Store) {
	if c, ok := s.(artifact.Closer); ok {
		c.Close()
	}
}
