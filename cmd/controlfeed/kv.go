package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/kv"
)

var kvPutCmd = &command{
	name:    "kv put",
	args:    "KEY [VALUE | -]",
	summary: "set a key on the producer and queue the change for publishing",
	details: `Sets KEY to VALUE in the kv table of --db. The value is read from standard
input when VALUE is "-" or omitted. The value is stored in the artifact store
first; then the row and an outbox event commit in one transaction, and the
event id is printed. A "serve --feed-sink" running on the same database
publishes it within its poll interval. --db is created if missing; the
other commands except serve require it to exist.`,
	example: `controlfeed kv put --db producer.db --artifact-dir /var/lib/cf/artifacts tenant/42/plan pro`,
	settings: settingList([]string{"db", "artifact-store", "artifact-dir"}, natsSettings,
		[]string{"nats-bucket", "nats-replicas", "log-format", "log-level"}),
	createDB: true,
}

var kvGetCmd = &command{
	name:    "kv get",
	args:    "KEY",
	summary: "print a key's value (exit status 1 if it does not exist)",
	details: `Prints the value of KEY from the kv table of --db, followed by a newline
unless the value already ends with one. A missing key is an error (exit
status 1).`,
	example:  `controlfeed kv get --db node1.db tenant/42/plan`,
	settings: []string{"db", "log-format", "log-level"},
}

var kvDeleteCmd = &command{
	name:    "kv delete",
	args:    "KEY",
	summary: "delete a key on the producer and queue the change for publishing",
	details: `Deletes KEY from the kv table of --db and, in the same transaction, appends
an outbox event, whose id is printed. Deleting a key that does not exist
changes nothing, publishes nothing and succeeds.`,
	example:  `controlfeed kv delete --db producer.db tenant/42/plan`,
	settings: []string{"db", "log-format", "log-level"},
}

var kvListCmd = &command{
	name:    "kv list",
	summary: "print every key and value",
	details: `Prints the kv table of --db sorted by key, one "KEY<TAB>VALUE" line each. A
value that is not printable on one line (newline, tab, other control
characters, invalid UTF-8) is printed as a double-quoted Go string. With
--json, prints one JSON array of {"key","value","version","updated_at"}.`,
	example:  `controlfeed kv list --db node1.db --json`,
	settings: []string{"db", "json", "log-format", "log-level"},
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
	var value []byte
	if len(pos) == 2 && pos[1] != "-" {
		value = []byte(pos[1])
	} else if value, err = io.ReadAll(m.Stdin); err != nil {
		return fmt.Errorf("controlfeed kv put %q: read value from stdin: %w", key, err)
	}
	db, err := node.OpenDB(ctx, s.DB)
	if err != nil {
		return err
	}
	defer db.Close()
	store, err := artifact.Open(s.ArtifactStore, s.artifactConfig())
	if err != nil {
		return err
	}
	defer closeStore(store)
	ev, err := kv.Put(ctx, db, store, key, value)
	if err != nil {
		return err
	}
	fmt.Fprintln(m.Stdout, ev.EventID)
	return nil
}

func (m *Main) runKVGet(ctx context.Context, args []string) error {
	var s settings
	db, pos, err := m.openDBArgs(ctx, kvGetCmd, &s, args, 1, 1)
	if err != nil {
		return helpOK(err)
	}
	defer db.Close()
	e, ok, err := kv.Get(ctx, db, pos[0])
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("controlfeed kv get %q: no such key in %s", pos[0], s.DB)
	}
	m.Stdout.Write(e.Value)
	if len(e.Value) == 0 || e.Value[len(e.Value)-1] != '\n' {
		fmt.Fprintln(m.Stdout)
	}
	return nil
}

func (m *Main) runKVDelete(ctx context.Context, args []string) error {
	var s settings
	db, pos, err := m.openDBArgs(ctx, kvDeleteCmd, &s, args, 1, 1)
	if err != nil {
		return helpOK(err)
	}
	defer db.Close()
	ev, existed, err := kv.Delete(ctx, db, pos[0])
	if err != nil {
		return err
	}
	if !existed {
		fmt.Fprintf(m.Stderr, "controlfeed kv delete %q: no such key; nothing to publish\n", pos[0])
		return nil
	}
	fmt.Fprintln(m.Stdout, ev.EventID)
	return nil
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
	db, _, err := m.openDBArgs(ctx, kvListCmd, &s, args, 0, 0)
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
