package main

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Operator mistakes with the commands that only read (status, kv get, kv
// list, the check of skip, tail) and with feed directories: each runs the
// real binary, expects the refusal, its exit code and message, and checks
// that no database or directory changed or appeared. The rows of
// docs/RELIABILITY.md "Read-only commands and feed directories" name these
// tests.

// readCommands are the commands that must only read --db, with their
// positional arguments.
var readCommands = [][]string{
	{"status"},
	{"status", "--json"},
	{"kv", "get", "k"},
	{"kv", "list"},
	{"skip", "evt-1"},
}

// foreignDB creates another program's SQLite database at path, with a few
// tables and rows, in rollback-journal mode (journal_mode DELETE).
func foreignDB(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(DELETE)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, stmt := range []string{
		`CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT NOT NULL)`,
		`CREATE TABLE invoices (id INTEGER PRIMARY KEY, account INTEGER REFERENCES accounts (id), total REAL)`,
		`INSERT INTO accounts (name) VALUES ('alice'), ('bob')`,
		`INSERT INTO invoices (account, total) VALUES (1, 9.5), (2, 12)`,
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	if m := journalModeOf(t, path); m != "delete" {
		t.Fatalf("set-up: journal mode %q, want delete", m)
	}
}

// journalModeOf reads the journal mode of the database at path without
// changing it.
func journalModeOf(t *testing.T, path string) string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	return mode
}

// TestMisuse_ReadCommandOnForeignDB points each read-only command at another
// program's database, and at an empty file: each refuses with "not a
// controlfeed database: PATH" (exit 1), and the file stays byte-identical,
// in its journal mode, with no journal or WAL file beside it.
func TestMisuse_ReadCommandOnForeignDB(t *testing.T) {
	for _, kind := range []string{"foreign", "empty"} {
		for _, args := range readCommands {
			t.Run(kind+"/"+strings.Join(args, "_"), func(t *testing.T) {
				dir := t.TempDir()
				path := filepath.Join(dir, "app.db")
				if kind == "foreign" {
					foreignDB(t, path)
				} else if err := os.WriteFile(path, nil, 0o644); err != nil {
					t.Fatal(err)
				}
				before := treeDigest(t, dir)
				out, code := runBinary(t, nil, "", append(args, "--db", path)...)
				if code != 1 || !strings.Contains(out, "not a controlfeed database: "+path) {
					t.Errorf("exit %d, output:\n%s\nwant exit 1 and %q", code, out, "not a controlfeed database: "+path)
				}
				assertUnchanged(t, dir, before)
				if kind == "foreign" {
					if m := journalModeOf(t, path); m != "delete" {
						t.Errorf("journal mode %q afterwards, want delete", m)
					}
				}
			})
		}
	}
}

// TestMisuse_ReadCommandOnMissingDB: a mistyped --db is an error naming it,
// and no file or directory appears.
func TestMisuse_ReadCommandOnMissingDB(t *testing.T) {
	for _, args := range readCommands {
		t.Run(strings.Join(args, "_"), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "typo", "node.db")
			before := treeDigest(t, dir)
			out, code := runBinary(t, nil, "", append(args, "--db", path)...)
			if code != 1 || !strings.Contains(out, path) || !strings.Contains(out, "no such file or directory") {
				t.Errorf("exit %d, output:\n%s\nwant exit 1 naming %s", code, out, path)
			}
			assertUnchanged(t, dir, before)
		})
	}
}

// TestMisuse_ReadCommandOnControlfeedDB: on a controlfeed database the
// commands that only read work and leave the database file byte-identical;
// skip of an event the node is not halted at refuses (exit 1) without
// writing. Only the sidecars SQLite's readers of a WAL database create, an
// empty -wal and the -shm index, may appear.
func TestMisuse_ReadCommandOnControlfeedDB(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "producer.db")
	env := []string{"CONTROLFEED_DB=" + path}
	if out, code := runBinary(t, env, "", "kv", "put", "k", "v"); code != 0 {
		t.Fatalf("kv put: exit %d\n%s", code, out)
	}
	for _, sidecar := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(path + sidecar); err == nil {
			t.Fatalf("set-up: %s%s left by kv put", path, sidecar)
		}
	}
	before := treeDigest(t, dir)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"status"}, 0, "outbox pending:  1"},
		{[]string{"status", "--json"}, 0, `"outbox_pending": 1`},
		{[]string{"kv", "get", "k"}, 0, "v\n"},
		{[]string{"kv", "get", "nokey"}, 1, `"nokey": no such key`},
		{[]string{"kv", "list"}, 0, "k\tv\n"},
		{[]string{"skip", "evt-1"}, 1, "not halted"},
	} {
		out, code := runBinary(t, env, "", tc.args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit %d, output:\n%s\nwant exit %d and %q", strings.Join(tc.args, " "), code, out, tc.code, tc.want)
		}
	}
	after := treeDigest(t, dir)
	if w, ok := after[path+"-wal"]; ok && w != fmt.Sprintf("%x", sha256.Sum256(nil)) {
		t.Errorf("a read-only command wrote to the WAL")
	}
	delete(after, path+"-wal")
	delete(after, path+"-shm")
	for p, d := range before {
		if after[p] != d {
			t.Errorf("%s changed: before %s, after %s", p, d, after[p])
		}
	}
	if len(after) != len(before) {
		t.Errorf("files appeared:\nbefore %v\nafter  %v", before, after)
	}
	if m := journalModeOf(t, path); m != "wal" {
		t.Errorf("journal mode %q, want wal", m)
	}
}

// TestMisuse_ReadCommandOnOlderSchema: a controlfeed database whose schema
// is older than the program's (here the applier's version 1) is refused
// with advice, not migrated by a command that only reads.
func TestMisuse_ReadCommandOnOlderSchema(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "node.db")
	if out, code := runBinary(t, []string{"CONTROLFEED_DB=" + path}, "", "kv", "put", "k", "v"); code != 0 {
		t.Fatalf("kv put: exit %d\n%s", code, out)
	}
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{ // back to the applier's schema version 1
		`DROP TABLE controlfeed_conflicts`,
		`ALTER TABLE controlfeed_applied_events DROP COLUMN digest`,
		`UPDATE controlfeed_applier_schema SET version = 1`,
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	before := treeDigest(t, dir)
	for _, args := range readCommands {
		out, code := runBinary(t, nil, "", append(args, "--db", path)...)
		if code != 1 || !strings.Contains(out, "applier schema is at version 1") || !strings.Contains(out, "controlfeed serve") {
			t.Errorf("%s: exit %d, output:\n%s\nwant exit 1 and advice to migrate with serve", strings.Join(args, " "), code, out)
		}
	}
	after := treeDigest(t, dir)
	delete(after, path+"-wal")
	delete(after, path+"-shm")
	for p, d := range before {
		if after[p] != d {
			t.Errorf("%s changed: before %s, after %s", p, d, after[p])
		}
	}
}

// TestMisuse_ReadCommandHelp: the help of a command that only reads --db
// no longer says it is created if missing.
func TestMisuse_ReadCommandHelp(t *testing.T) {
	for _, args := range [][]string{{"status"}, {"kv", "get"}, {"kv", "list"}, {"skip"}} {
		out, code := runBinary(t, nil, "", append(args, "--help")...)
		if code != 0 || strings.Contains(out, "created if missing") || !strings.Contains(out, "must exist") {
			t.Errorf("%s --help: exit %d, --db help:\n%s", strings.Join(args, " "), code, out)
		}
	}
}

// TestMisuse_MissingFeedDir: a reader of a file feed whose directory does
// not exist (a typo) exits with an error naming it, and neither the
// directory nor a database appears; serve used to create it, report healthy
// and wait at cursor 0 for ever.
func TestMisuse_MissingFeedDir(t *testing.T) {
	for _, tc := range []struct {
		name string
		args func(dir, feedDir string) []string
	}{
		{"tail", func(dir, feedDir string) []string {
			return []string{"tail", "--feed-source", "file", "--feed-dir", feedDir, "--follow=false"}
		}},
		{"tail_follow", func(dir, feedDir string) []string {
			return []string{"tail", "--feed-source", "file", "--feed-dir", feedDir}
		}},
		{"serve", func(dir, feedDir string) []string {
			return []string{"serve", "--db", filepath.Join(dir, "node.db"), "--feed-source", "file", "--feed-dir", feedDir,
				"--artifact-dir", filepath.Join(dir, "artifacts")}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			feedDir := filepath.Join(dir, "feeed", "events")
			before := treeDigest(t, dir)
			out, code := runBinary(t, nil, "", tc.args(dir, feedDir)...)
			if code != 1 || !strings.Contains(out, feedDir) || !strings.Contains(out, "the feed directory does not exist") {
				t.Errorf("exit %d, output:\n%s\nwant exit 1 and an error naming %s", code, out, feedDir)
			}
			assertUnchanged(t, dir, before)
		})
	}
}

// runUnprivileged runs the binary like runBinary as a user that directory
// permissions apply to: as itself when not root; as root, as nobody
// (65534), from a copy of the binary nobody may execute, in the same
// directories (the caller makes them accessible). It gives up after
// timeout: a command still running then is reported with exit code -1.
func runUnprivileged(t *testing.T, timeout time.Duration, args ...string) (string, int) {
	t.Helper()
	if binary == "" {
		t.Skip("needs the controlfeed binary; not built with -short")
	}
	bin := binary
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		binDir, err := os.MkdirTemp("", "controlfeed-nobody-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(binDir) })
		b, err := os.ReadFile(binary)
		if err != nil {
			t.Fatal(err)
		}
		bin = filepath.Join(binDir, "controlfeed")
		if err := os.WriteFile(bin, b, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(binDir, 0o755); err != nil {
			t.Fatal(err)
		}
		cred = &syscall.Credential{Uid: 65534, Gid: 65534}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case ctx.Err() != nil:
		return string(out) + "\n(still running after " + timeout.String() + ")", -1
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	default:
		t.Fatalf("controlfeed %s: %v\n%s", strings.Join(args, " "), err, out)
		return "", -1
	}
}

// TestMisuse_UnreadableFeedDir: a node (and tail) whose feed directory it
// may not list exits at start-up with an error naming the directory and the
// permissions, instead of starting and warning at every retry. As root,
// which permissions do not stop, the commands run as nobody.
func TestMisuse_UnreadableFeedDir(t *testing.T) {
	base, err := os.MkdirTemp("", "controlfeed-unreadable-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	feedDir := filepath.Join(base, "feed")
	work := filepath.Join(base, "work") // the node's database and artifacts
	for _, d := range []string{feedDir, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A producer's directory: the lock file exists, as a Sink leaves it.
	if err := os.WriteFile(filepath.Join(feedDir, ".lock"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(work, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	before := treeDigest(t, base)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"serve", []string{"serve", "--db", filepath.Join(work, "node.db"), "--feed-source", "file", "--feed-dir", feedDir,
			"--artifact-dir", filepath.Join(work, "artifacts"), "--poll-interval", "50ms"}},
		{"tail", []string{"tail", "--feed-source", "file", "--feed-dir", feedDir, "--follow=false"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Enter, not list: the node can open the lock file but not
			// read the directory's names.
			if err := os.Chmod(feedDir, 0o311); err != nil {
				t.Fatal(err)
			}
			out, code := runUnprivileged(t, 20*time.Second, tc.args...)
			if err := os.Chmod(feedDir, 0o755); err != nil {
				t.Fatal(err)
			}
			if code != 1 || !strings.Contains(out, feedDir) || !strings.Contains(out, "permission denied") ||
				!strings.Contains(out, "cannot list the feed directory") {
				t.Errorf("exit %d, output:\n%s\nwant exit 1 and an error naming %s and its permissions", code, out, feedDir)
			}
			if strings.Contains(out, "level=WARN") {
				t.Errorf("warned instead of exiting:\n%s", out)
			}
			assertUnchanged(t, base, before)
		})
	}
}
