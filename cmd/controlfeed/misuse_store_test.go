package main

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/internal/natsembed"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/internal/pgtest"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
	"github.com/controlfeed/controlfeed/outbox"
)

// storeDBs is a producer's database on which a pump has run (so its
// artifact store is recorded), with its feed and artifact directories.
type storeDBs struct {
	dir, db, feedDir, arts string
}

// newStoreDBs opens db (a fresh SQLite file if "") as serve --feed-sink
// does, with the file store in arts, and closes it.
func newStoreDBs(t *testing.T, db string, art artifact.Config, store string) storeDBs {
	t.Helper()
	dir := t.TempDir()
	r := storeDBs{dir: dir, db: db, feedDir: filepath.Join(dir, "feed"), arts: filepath.Join(dir, "arts")}
	if r.db == "" {
		r.db = filepath.Join(dir, "producer.db")
	}
	if art.Dir == "" && store != "jetstream" {
		art.Dir = r.arts
	}
	if err := os.MkdirAll(r.feedDir, 0o755); err != nil {
		t.Fatal(err)
	}
	n, err := node.Open(context.Background(), &node.Config{DB: r.db, FeedSink: "file", Feed: feed.SourceConfig{FileDir: r.feedDir},
		ArtifactStore: store, Artifact: art})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	return r
}

// outboxRows counts the outbox rows and kv rows of the producer database.
func outboxRows(t *testing.T, db string) (events, keys int) {
	t.Helper()
	var sdb *sql.DB
	var err error
	if node.IsPostgresURL(db) {
		sdb, err = node.OpenPostgresReadOnly(context.Background(), db)
	} else {
		sdb, err = sqlitedb.Open(context.Background(), db) // not read-only: closing removes -wal and -shm
	}
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	if err := sdb.QueryRow(`SELECT (SELECT count(*) FROM controlfeed_outbox), (SELECT count(*) FROM controlfeed_kv)`).Scan(&events, &keys); err != nil {
		t.Fatal(err)
	}
	return events, keys
}

// TestMisuse_KVPutIntoAnotherArtifactStore: once serve --feed-sink has run
// on a producer database, kv put with another artifact store than the
// pump's (a forgotten --artifact-dir or --artifact-store, another bucket)
// is refused, naming both stores and the flags that fix it, before it
// stores or commits anything. The pump's own store, by any path to its
// directory, works; so does any store on a database no pump has run on.
func TestMisuse_KVPutIntoAnotherArtifactStore(t *testing.T) {
	r := newStoreDBs(t, "", artifact.Config{}, "")
	recorded := "the file store at " + r.arts
	fix := "--artifact-store file --artifact-dir " + r.arts
	other := filepath.Join(r.dir, "other")
	cases := []struct {
		name  string
		flags []string
		given string
	}{
		{"DefaultDir", nil, "the file store at " + r.db + ".artifacts"},
		{"OtherDir", []string{"--artifact-dir", other}, "the file store at " + other},
		{"JetStream", []string{"--artifact-store", "jetstream", "--nats-url", "nats://127.0.0.1:1"}, `the jetstream store (bucket "controlfeed-artifacts")`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := treeDigest(t, r.dir)
			out, code := runBinary(t, nil, "", append(append([]string{"kv", "put", "--db", r.db}, tc.flags...), "k", "v")...)
			assertRefused(t, out, code, 1, `controlfeed kv put "k": refused`, recorded, tc.given, "nothing was stored or committed",
				"pass "+fix, "Changing the artifact store")
			assertUnchanged(t, r.dir, before)
			if ev, keys := outboxRows(t, r.db); ev != 0 || keys != 0 {
				t.Errorf("after the refusal: %d outbox rows, %d keys; want none", ev, keys)
			}
		})
	}

	t.Run("PumpStore", func(t *testing.T) {
		for i, dir := range []string{r.arts, r.dir + "/./feed/../arts/"} {
			out, code := runBinary(t, nil, "", "kv", "put", "--db", r.db, "--artifact-dir", dir, "k", "v")
			if code != 0 {
				t.Fatalf("kv put --artifact-dir %s: exit %d\n%s", dir, code, out)
			}
			if ev, _ := outboxRows(t, r.db); ev != i+1 {
				t.Fatalf("%d outbox rows after %d puts", ev, i+1)
			}
		}
		objs, _ := filepath.Glob(filepath.Join(r.arts, "sha256", "*", "*"))
		if len(objs) == 0 {
			t.Errorf("no object in the pump's store %s", r.arts)
		}
	})

	t.Run("NoRecord", func(t *testing.T) {
		db := filepath.Join(t.TempDir(), "single.db")
		for _, flags := range [][]string{nil, {"--artifact-dir", other}} {
			out, code := runBinary(t, nil, "", append(append([]string{"kv", "put", "--db", db}, flags...), "k", "v")...)
			if code != 0 {
				t.Fatalf("kv put %v on a database no pump has run on: exit %d\n%s", flags, code, out)
			}
		}
	})

	t.Run("DeleteStoresNothing", func(t *testing.T) {
		// kv delete stores no artifact, so its store flags do not matter.
		out, code := runBinary(t, nil, "", "kv", "delete", "--db", r.db, "--artifact-dir", other, "k")
		if code != 0 {
			t.Fatalf("kv delete: exit %d\n%s", code, out)
		}
	})
}

// TestMisuse_ServeWithAnotherArtifactStore: serve --feed-sink on a
// producer database whose pump published from another store is refused
// before it opens any backend (the other directory is not created), and
// says how to change the store on purpose; after the documented DELETE of
// the record it starts with the new store and records it.
func TestMisuse_ServeWithAnotherArtifactStore(t *testing.T) {
	r := newStoreDBs(t, "", artifact.Config{}, "")
	other := filepath.Join(r.dir, "other")
	before := treeDigest(t, r.dir)
	out, code := runBinary(t, nil, "", "serve", "--db", r.db, "--feed-sink", "file", "--feed-dir", r.feedDir, "--artifact-dir", other)
	assertRefused(t, out, code, 1, "controlfeed serve: refused", "the file store at "+r.arts, "the file store at "+other,
		"start serve with --artifact-store file --artifact-dir "+r.arts,
		"sqlite3 "+r.db+": DELETE FROM "+outbox.ArtifactStoreTable)
	assertUnchanged(t, r.dir, before)

	// Changing the store on purpose, as documented.
	ctx := context.Background()
	db, err := node.OpenDB(ctx, r.db)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "DELETE FROM "+outbox.ArtifactStoreTable); err != nil {
		t.Fatal(err)
	}
	cmd := startProducerWith(t, r.db, r.feedDir, "--artifact-dir", other)
	cmd.Process.Kill()
	got, _, ok, err := outbox.ReadArtifactStore(ctx, db)
	if err != nil || !ok || got.Location != other {
		t.Errorf("after the DELETE and a serve with %s, the record is %+v, %v, %v", other, got, ok, err)
	}
}

// TestMisuse_KVPutIntoAnotherBucket: with the jetstream store, the bucket
// is the store's identity and the server URL is not: kv put with another
// --nats-bucket, or the file store, is refused before it connects or
// creates a bucket; the pump's bucket through another URL of the same
// server works.
func TestMisuse_KVPutIntoAnotherBucket(t *testing.T) {
	srv := natsembed.StartForTest(t)
	url := srv.ClientURL()
	r := newStoreDBs(t, "", artifact.Config{NATS: artifact.NATSConfig{URLs: []string{url}, Bucket: "pump-arts"}}, "jetstream")
	env := []string{"CONTROLFEED_NATS_URL=" + url}
	for _, tc := range []struct {
		name  string
		flags []string
		given string
	}{
		{"OtherBucket", []string{"--artifact-store", "jetstream", "--nats-bucket", "typo-arts"}, `the jetstream store (bucket "typo-arts")`},
		{"DefaultBucket", []string{"--artifact-store", "jetstream"}, `the jetstream store (bucket "controlfeed-artifacts")`},
		{"FileStore", nil, "the file store at " + r.db + ".artifacts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runBinary(t, env, "", append(append([]string{"kv", "put", "--db", r.db}, tc.flags...), "k", "v")...)
			assertRefused(t, out, code, 1, "refused", `the jetstream store (bucket "pump-arts")`, tc.given,
				"pass --artifact-store jetstream --nats-bucket pump-arts")
			if ev, _ := outboxRows(t, r.db); ev != 0 {
				t.Errorf("%d outbox rows after the refusal", ev)
			}
		})
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for _, b := range []string{"typo-arts", "controlfeed-artifacts"} {
		if _, err := js.ObjectStore(context.Background(), b); err == nil {
			t.Errorf("a refused kv put created the bucket %s", b)
		}
	}
	other := strings.Replace(url, "127.0.0.1", "localhost", 1)
	out, code := runBinary(t, nil, "", "kv", "put", "--db", r.db, "--artifact-store", "jetstream", "--nats-url", other, "--nats-bucket", "pump-arts", "k", "v")
	if code != 0 {
		t.Fatalf("kv put into the pump's bucket through %s: exit %d\n%s", other, code, out)
	}
}

// TestMisuse_KVPutIntoAnotherArtifactStorePostgres: the same refusal on a
// PostgreSQL producer database.
func TestMisuse_KVPutIntoAnotherArtifactStorePostgres(t *testing.T) {
	u := pgtest.NewSchema(t)
	r := newStoreDBs(t, u, artifact.Config{}, "")
	other := filepath.Join(r.dir, "other")
	out, code := runBinary(t, nil, "", "kv", "put", "--db", u, "--artifact-dir", other, "k", "v")
	assertRefused(t, out, code, 1, "refused", "the file store at "+r.arts, "the file store at "+other, "nothing was stored",
		"pass --artifact-store file --artifact-dir "+r.arts)
	if _, err := os.Stat(other); !os.IsNotExist(err) {
		t.Errorf("the refused kv put opened %s: %v", other, err)
	}
	if ev, keys := outboxRows(t, u); ev != 0 || keys != 0 {
		t.Errorf("after the refusal: %d outbox rows, %d keys", ev, keys)
	}
	if out, code := runBinary(t, nil, "", "kv", "put", "--db", u, "--artifact-dir", r.arts, "k", "v"); code != 0 {
		t.Fatalf("kv put into the pump's store: exit %d\n%s", code, out)
	}
	out, code = runBinary(t, nil, "", "serve", "--db", u, "--feed-sink", "file", "--feed-dir", r.feedDir, "--artifact-dir", other)
	assertRefused(t, out, code, 1, "controlfeed serve: refused", "the file store at "+r.arts, "psql: DELETE FROM "+outbox.ArtifactStoreTable)
}
