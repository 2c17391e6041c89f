package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/outbox"
	"github.com/controlfeed/controlfeed/trust"
)

var keysGenerateCmd = &command{
	name:    "keys generate",
	summary: "create an ed25519 signing key pair for a producer",
	details: `Creates a new ed25519 key pair in the directory --out: NAME.key, the
private key a producer signs with (serve --signing-key), and NAME.pub, the
public key nodes trust (serve --trust-key). Both files are created with
mode 0600 in a directory created 0700 if missing; an existing file is never
overwritten. It prints the key id and the ID=KEY form of the public key,
which --trust-key and CONTROLFEED_TRUST_KEY also accept (--json: as JSON).

Keep NAME.key on the producer only, readable by its user only: serve
refuses a key file that group or others can read. Copy NAME.pub (or the
ID=KEY line) to the nodes. See docs/SECURITY.md for rotation and
revocation.`,
	example:  `controlfeed keys generate --out /etc/controlfeed/keys --name producer-2026`,
	settings: []string{"out", "name", "json"},
	override: map[string]flagHelp{
		"out": {usage: "directory `DIR` to write NAME.key and NAME.pub into (required)"},
	},
}

var keysShowCmd = &command{
	name:    "keys show",
	args:    "FILE",
	summary: "print the key id and ID=KEY form of a key file",
	details: `Reads the public or private key file FILE written by "keys generate" and
prints its key id and the ID=KEY form of its public key (never the private
key). --json prints them as JSON.`,
	example:  `controlfeed keys show /etc/controlfeed/keys/producer-2026.pub`,
	settings: []string{"json"},
}

var keysAnnounceCmd = &command{
	name:    "keys announce",
	args:    "FILE|ID=KEY",
	summary: "tell the fleet, through the feed, to trust a new signing key",
	details: `Queues in the producer database --db an event that adds the public key
FILE (a .pub file) or ID=KEY to the keys every verifying node trusts. The
producer's pump signs it with its current key, so nodes that trust that key
apply it and from then on also accept events signed by the new one (the key
is stored in the node's database). Restart the producer with
--signing-key NEW.key once the nodes have applied it ("controlfeed status"
shows each node's cursor; the command prints the event id).

A node that does not verify (no --trust-key) records the event and learns
nothing. See docs/SECURITY.md for the runbook.`,
	example:  `controlfeed keys announce --db producer.db /etc/controlfeed/keys/producer-2027.pub`,
	settings: []string{"db", "log-format", "log-level"},
	override: map[string]flagHelp{
		"db": {usage: "the producer's SQLite database `FILE`; must exist"},
	},
}

var keysRevokeCmd = &command{
	name:    "keys revoke",
	args:    "KEY_ID",
	summary: "tell the fleet, through the feed, to stop trusting a key",
	details: `Queues in the producer database --db an event that revokes the key KEY_ID
(configured with --trust-key or added by "keys announce") on every verifying
node from the event's position on: a later event signed by it is a security
halt (unknown-key). The pump signs the event with its current key, which
must be another trusted key if the revoked one is compromised (restart the
producer with the new key first). A producer started on this database with
the revoked key refuses to start. See docs/SECURITY.md.

It refuses to revoke the key that signed the pump's last published event
(the pump may still sign with it: the fleet would halt at its next event)
unless --force is given, and notes an id that no event of the outbox names
(a mistyped id revokes nothing).`,
	example:  `controlfeed keys revoke --db producer.db ed25519:83f6ed4738d593fd`,
	settings: []string{"db", "force", "log-format", "log-level"},
	override: map[string]flagHelp{
		"db":    {usage: "the producer's SQLite database `FILE`; must exist"},
		"force": {usage: "revoke even the key that signed the pump's last published event (the pump is stopped for good, or already signs with another key and has published nothing since)", show: "false"},
	},
}

// keyInfo is what keys generate and keys show print.
type keyInfo struct {
	KeyID      string `json:"kid"`
	TrustSpec  string `json:"trust_key"`
	PublicFile string `json:"public_key_file,omitempty"`
	SecretFile string `json:"private_key_file,omitempty"`
}

func (m *Main) runKeys(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageErrorf("controlfeed keys: missing subcommand: generate, show, announce or revoke")
	}
	switch args[0] {
	case "generate":
		return m.runKeysGenerate(ctx, args[1:])
	case "show":
		return m.runKeysShow(ctx, args[1:])
	case "announce":
		return m.runKeysEvent(ctx, keysAnnounceCmd, args[1:])
	case "revoke":
		return m.runKeysEvent(ctx, keysRevokeCmd, args[1:])
	case "-h", "-help", "--help":
		for _, c := range keysCmds {
			fmt.Fprintf(m.Stdout, "  controlfeed %-17s %s\n", c.name, c.summary)
		}
		fmt.Fprintf(m.Stdout, "\nRun \"controlfeed keys SUBCOMMAND --help\" for its flags.\n")
		return nil
	default:
		return usageErrorf("controlfeed keys: unknown subcommand %q: want generate, show, announce or revoke", args[0])
	}
}

func (m *Main) runKeysGenerate(_ context.Context, args []string) error {
	var s settings
	pos, err := keysGenerateCmd.parse(m, &s, args)
	if err != nil {
		return helpOK(err)
	}
	if len(pos) > 0 {
		return usageErrorf("controlfeed keys generate: unexpected argument %q\n%s", pos[0], keysGenerateCmd.usageLine())
	}
	if s.Out == "" {
		return usageErrorf("controlfeed keys generate: --out DIR is required\n%s", keysGenerateCmd.usageLine())
	}
	if s.KeyName == "" || strings.ContainsAny(s.KeyName, `/\`) || strings.HasPrefix(s.KeyName, ".") {
		return usageErrorf("controlfeed keys generate: --name %q: want a plain file name (no slash, not starting with a dot)", s.KeyName)
	}
	k, err := trust.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("controlfeed keys generate: %w", err)
	}
	if err := os.MkdirAll(s.Out, 0o700); err != nil {
		return fmt.Errorf("controlfeed keys generate: create %s: %w", s.Out, err)
	}
	secret := filepath.Join(s.Out, s.KeyName+".key")
	public := filepath.Join(s.Out, s.KeyName+".pub")
	for _, f := range []string{secret, public} {
		if _, err := os.Lstat(f); err == nil {
			return fmt.Errorf("controlfeed keys generate: %s exists; refusing to overwrite a key (choose another --name or --out)", f)
		}
	}
	if err := writeNew(secret, trust.MarshalPrivateKey(k)); err != nil {
		return fmt.Errorf("controlfeed keys generate: %w", err)
	}
	if err := writeNew(public, trust.MarshalPublicKey(k.Public())); err != nil {
		os.Remove(secret)
		return fmt.Errorf("controlfeed keys generate: %w", err)
	}
	info := keyInfo{KeyID: k.ID(), TrustSpec: trustSpec(k.Public()), PublicFile: public, SecretFile: secret}
	if s.JSON {
		return json.NewEncoder(m.Stdout).Encode(info)
	}
	fmt.Fprintf(m.Stdout, "key id:      %s\nprivate key: %s (producer: serve --signing-key %s)\npublic key:  %s (nodes: serve --trust-key %s)\ntrust entry: %s\n",
		info.KeyID, secret, secret, public, public, info.TrustSpec)
	return nil
}

func (m *Main) runKeysShow(_ context.Context, args []string) error {
	var s settings
	pos, err := keysShowCmd.parse(m, &s, args)
	if err != nil {
		return helpOK(err)
	}
	if len(pos) != 1 {
		return usageErrorf("controlfeed keys show: want one key FILE\n%s", keysShowCmd.usageLine())
	}
	b, err := os.ReadFile(pos[0])
	if err != nil {
		return fmt.Errorf("controlfeed keys show: %w", err)
	}
	var pub trust.PublicKey
	if k, perr := trust.ParsePrivateKey(b); perr == nil {
		pub = k.Public()
	} else if pub, err = trust.ParsePublicKey(b); err != nil {
		return fmt.Errorf("controlfeed keys show: %s: %w", pos[0], err)
	}
	info := keyInfo{KeyID: pub.ID, TrustSpec: trustSpec(pub)}
	if s.JSON {
		return json.NewEncoder(m.Stdout).Encode(info)
	}
	fmt.Fprintf(m.Stdout, "key id:      %s\ntrust entry: %s\n", info.KeyID, info.TrustSpec)
	return nil
}

// writeNew creates path with mode 0600, failing if it exists, and syncs it.
func writeNew(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

func trustSpec(k trust.PublicKey) string {
	return k.ID + "=" + base64.StdEncoding.EncodeToString(k.Key)
}

// trustKeysValue is the flag.Value of --trust-key: each Set adds entries
// (comma-separated in the environment variable).
type trustKeysValue struct{ s *settings }

func (v trustKeysValue) String() string {
	if v.s == nil {
		return ""
	}
	return strings.Join(v.s.TrustKeys, ",")
}

// Set refuses an empty entry (an empty value, or nothing between two
// commas): a --trust-key "$UNSET" would otherwise leave the node with no
// trusted key, which turns verification off without a word.
func (v trustKeysValue) Set(val string) error {
	entries := strings.Split(val, ",")
	for i, e := range entries {
		e = strings.TrimSpace(e)
		if e == "" {
			where := "the value is empty"
			if len(entries) > 1 {
				where = fmt.Sprintf("entry %d of %d is empty", i+1, len(entries))
			}
			return fmt.Errorf("%s (an unset shell variable?): a node with no trusted key verifies nothing; name a .pub file or ID=KEY, "+
				"or, to run without verification on purpose, leave out --trust-key and CONTROLFEED_TRUST_KEY", where)
		}
		v.s.TrustKeys = append(v.s.TrustKeys, e)
	}
	return nil
}

// loadTrust reads --signing-key, --snapshot-signing-key and --trust-key
// into s.signer, s.snapSigner and s.keyring. A signing key file readable by group or others is refused, as
// OpenSSH refuses an unprotected private key. Errors never contain key
// material.
func (s *settings) loadTrust(cmd *command) error {
	if s.SigningKey != "" {
		k, err := readSigningKey(s.SigningKey)
		if err != nil {
			return fmt.Errorf("controlfeed %s: --signing-key: %w", cmd.name, err)
		}
		s.signer = k
	}
	if s.SnapSigningKey != "" {
		k, err := readSigningKey(s.SnapSigningKey)
		if err != nil {
			return fmt.Errorf("controlfeed %s: --snapshot-signing-key: %w", cmd.name, err)
		}
		s.snapSigner = k
	}
	if len(s.TrustKeys) == 0 {
		return nil
	}
	var keys []trust.PublicKey
	for _, e := range s.TrustKeys {
		k, err := readTrustEntry(e)
		if err != nil {
			return fmt.Errorf("controlfeed %s: --trust-key: %w", cmd.name, err)
		}
		keys = append(keys, k)
	}
	kr, err := trust.NewKeyring(keys...)
	if err != nil {
		return fmt.Errorf("controlfeed %s: --trust-key: %w", cmd.name, err)
	}
	s.keyring = kr
	return nil
}

func readSigningKey(path string) (*trust.PrivateKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %04o: a private key must not be readable by group or others (chmod 600 %s)", path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := trust.ParsePrivateKey(b)
	if err != nil {
		if _, perr := trust.ParsePublicKey(b); perr == nil {
			return nil, fmt.Errorf("%s is a public key; a producer signs with the .key file next to it", path)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// readTrustEntry reads one --trust-key entry: ID=KEY, or a public key file.
func readTrustEntry(e string) (trust.PublicKey, error) {
	if strings.HasPrefix(e, "ed25519:") && strings.Contains(e, "=") {
		return trust.ParseTrustSpec(e)
	}
	b, err := os.ReadFile(e)
	if errors.Is(err, fs.ErrNotExist) {
		return trust.PublicKey{}, fmt.Errorf("%s: no such file (want a .pub file or ID=KEY, as \"controlfeed keys generate\" prints)", e)
	}
	if err != nil {
		return trust.PublicKey{}, err
	}
	k, err := trust.ParsePublicKey(b)
	if err != nil {
		return trust.PublicKey{}, fmt.Errorf("%s: %w", e, err)
	}
	return k, nil
}

// keysCmds are the keys subcommands, in help order.
var keysCmds = []*command{keysGenerateCmd, keysShowCmd, keysAnnounceCmd, keysRevokeCmd}

// runKeysEvent queues a key announcement or revocation in the producer's
// outbox and prints its event id.
func (m *Main) runKeysEvent(ctx context.Context, cmd *command, args []string) error {
	var s settings
	pos, err := m.parseDBArgs(cmd, &s, args, 1, 1)
	if err != nil {
		return helpOK(err)
	}
	var ev controlevent.Event
	if cmd == keysAnnounceCmd {
		k, err := readTrustEntry(pos[0])
		if err != nil {
			return fmt.Errorf("controlfeed %s: %w", cmd.name, err)
		}
		ev, err = trust.AddKeyEvent(k, time.Now())
		if err != nil {
			return err
		}
	} else if ev, err = trust.RevokeKeyEvent(pos[0], time.Now()); err != nil {
		return usageErrorf("controlfeed %s: %v", cmd.name, err)
	}
	if err := refuseNodeDB(ctx, cmd, s.DB); err != nil {
		return err
	}
	db, err := node.OpenDB(ctx, s.DB)
	if err != nil {
		return err
	}
	defer db.Close()
	if cmd == keysRevokeCmd {
		if err := m.checkRevoke(ctx, db, ev.Key, s.Force); err != nil {
			return err
		}
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("controlfeed %s: %s: %w", cmd.name, s.DB, err)
	}
	defer tx.Rollback()
	if err := outbox.Append(ctx, tx, ev); err != nil {
		return fmt.Errorf("controlfeed %s: %s: %w", cmd.name, s.DB, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("controlfeed %s: %s: commit: %w", cmd.name, s.DB, err)
	}
	fmt.Fprintln(m.Stdout, ev.EventID)
	return nil
}

// checkRevoke refuses "keys revoke" of the key that signed the pump's last
// published event (unless force): the pump may still sign with it, so the
// revocation would be signed by the key it revokes and every verifying node
// would halt at the pump's next event (unknown-key). It notes, on stderr,
// an id no event of the outbox names: a mistyped id revokes nothing.
func (m *Main) checkRevoke(ctx context.Context, db *sql.DB, kid string, force bool) error {
	u, err := outbox.ReadKeyUse(ctx, db, kid)
	if err != nil {
		return fmt.Errorf("controlfeed keys revoke %s: %w", kid, err)
	}
	if u.SignedLast && !force {
		return fmt.Errorf("controlfeed keys revoke %s: refused: the pump signed its last published event (chain seq %d) with this key, so it may still sign with it: "+
			"the revocation would be signed by the key it revokes, and every verifying node would halt at the pump's next event (unknown-key); nothing was queued. "+
			"First restart serve with another key the nodes trust (--signing-key NEW.key, see docs/SECURITY.md) and let it publish one event (any change), then revoke; "+
			"if serve already signs with another key and has published nothing since, or the pump is stopped for good, pass --force", kid, u.LastSeq)
	}
	if !u.SignedLast && !u.InKeyEvent {
		fmt.Fprintf(m.Stderr, "controlfeed keys revoke: note: no event in this outbox announces or revokes %s, and the pump's last published event was not signed by it: "+
			"check the id (a mistyped id revokes nothing; \"controlfeed keys show FILE\" prints a key's id). Revoking a key the nodes trust only through --trust-key is fine.\n", kid)
	}
	return nil
}
