package kv_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/filestore"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
	"github.com/controlfeed/controlfeed/kv"
	"github.com/controlfeed/controlfeed/outbox"
)

// fakeSource serves a fixed list of published events.
type fakeSource struct {
	mu     sync.Mutex
	events []controlevent.Event
}

var _ feed.Source = (*fakeSource)(nil)

func (s *fakeSource) Name() string { return "fake" }

func (s *fakeSource) Poll(_ context.Context, since uint64) ([]controlevent.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []controlevent.Event
	for _, e := range s.events {
		if e.ControlVersion > since {
			out = append(out, e)
		}
	}
	return out, nil
}

func openProducer(t testing.TB) *sql.DB {
	t.Helper()
	ctx := context.Background()
	db, err := sqlitedb.Open(ctx, filepath.Join(t.TempDir(), "producer.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := kv.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := kv.Migrate(ctx, db); err != nil { // idempotent
		t.Fatal(err)
	}
	if err := outbox.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	return db
}

func openNode(t testing.TB) *sql.DB {
	t.Helper()
	ctx := context.Background()
	db, err := sqlitedb.Open(ctx, filepath.Join(t.TempDir(), "node.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := kv.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := applier.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	return db
}

func newStore(t testing.TB) artifact.Store {
	t.Helper()
	st, err := filestore.New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func pending(t testing.TB, db *sql.DB) []controlevent.Event {
	t.Helper()
	rows, err := outbox.ListPending(context.Background(), db, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var out []controlevent.Event
	for _, r := range rows {
		out = append(out, r.Event)
	}
	return out
}

func TestPut(t *testing.T) {
	ctx := context.Background()
	db, st := openProducer(t), newStore(t)
	ev1, err := kv.Put(ctx, db, st, "tenants/acme", []byte("v1"))
	if err != nil {
		t.Fatal(err)
	}
	ev2, err := kv.Put(ctx, db, st, "tenants/acme", []byte("v2"))
	if err != nil {
		t.Fatal(err)
	}
	if ev1.Type != kv.TypePut || ev1.Key != "tenants/acme" || ev1.Version != 1 || ev1.BaseVersion != 0 ||
		ev1.ArtifactRef != controlevent.Checksum([]byte("v1")) || ev1.Checksum != ev1.ArtifactRef || ev1.ControlVersion != 0 {
		t.Errorf("first event = %+v", ev1)
	}
	if ev2.Version != 2 || ev2.BaseVersion != 1 || ev2.EventID == ev1.EventID {
		t.Errorf("second event = %+v", ev2)
	}
	if err := ev2.ValidateUnpublished(); err != nil {
		t.Error(err)
	}
	got, err := artifact.GetBytes(ctx, st, ev2.ArtifactRef, 100)
	if err != nil || string(got) != "v2" {
		t.Errorf("artifact = %q, %v", got, err)
	}
	e, ok, err := kv.Get(ctx, db, "tenants/acme")
	if err != nil || !ok || string(e.Value) != "v2" || e.Version != 2 || e.UpdatedAt.IsZero() {
		t.Errorf("Get = %+v, %v, %v", e, ok, err)
	}
	p := pending(t, db)
	if len(p) != 2 || p[0].EventID != ev1.EventID || p[1].EventID != ev2.EventID || p[1].Version != 2 {
		t.Errorf("outbox = %+v", p)
	}
}

func TestPut_InvalidKey(t *testing.T) {
	ctx := context.Background()
	db, st := openProducer(t), newStore(t)
	for _, k := range []string{"", "a\x00b", "tab\there", strings.Repeat("k", controlevent.MaxKeyLen+1), "\xff"} {
		if _, err := kv.Put(ctx, db, st, k, []byte("x")); !errors.Is(err, kv.ErrInvalidKey) {
			t.Errorf("Put(%q): %v", k, err)
		}
	}
	if len(pending(t, db)) != 0 {
		t.Error("an invalid Put appended an event")
	}
}

func TestPutLimit_TooLarge(t *testing.T) {
	ctx := context.Background()
	db, st := openProducer(t), newStore(t)
	_, err := kv.PutLimit(ctx, db, st, "big", []byte("12345"), 4)
	if !errors.Is(err, kv.ErrValueTooLarge) || !strings.Contains(err.Error(), "5 bytes") || !strings.Contains(err.Error(), "4-byte limit") {
		t.Fatalf("PutLimit of 5 bytes with limit 4 = %v, want ErrValueTooLarge giving both sizes", err)
	}
	if _, err := artifact.GetBytes(ctx, st, artifact.RefOf([]byte("12345")), 100); !errors.Is(err, artifact.ErrNotFound) {
		t.Errorf("the refused value reached the artifact store: %v", err)
	}
	if _, ok, _ := kv.Get(ctx, db, "big"); ok || len(pending(t, db)) != 0 {
		t.Error("a refused Put changed the table or the outbox")
	}
	if _, err := kv.PutLimit(ctx, db, st, "big", []byte("1234"), 4); err != nil {
		t.Errorf("PutLimit at exactly the limit = %v", err)
	}
}

func TestCheckValueSize_Default(t *testing.T) {
	if err := kv.CheckValueSize(kv.DefaultMaxValueBytes, 0); err != nil {
		t.Errorf("at the default limit: %v", err)
	}
	if err := kv.CheckValueSize(kv.DefaultMaxValueBytes+1, 0); !errors.Is(err, kv.ErrValueTooLarge) {
		t.Errorf("one byte over the default limit: %v", err)
	}
	if kv.DefaultMaxValueBytes != applier.DefaultMaxPayloadBytes {
		t.Errorf("DefaultMaxValueBytes %d differs from the applier's limit %d", kv.DefaultMaxValueBytes, applier.DefaultMaxPayloadBytes)
	}
}

func TestPut_RolledBackLeavesNeither(t *testing.T) {
	ctx := context.Background()
	db, st := openProducer(t), newStore(t)
	if _, err := kv.Put(ctx, db, st, "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	// Make outbox.Append fail inside Put's transaction: a trigger aborts
	// inserts into the outbox. The row update must roll back with it.
	if _, err := db.Exec(`CREATE TRIGGER fail_outbox BEFORE INSERT ON controlfeed_outbox BEGIN SELECT RAISE(ABORT, 'injected'); END`); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, db, st, "a", []byte("2")); err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("Put with failing outbox: %v", err)
	}
	if _, err := kv.Put(ctx, db, st, "b", []byte("new")); err == nil {
		t.Fatal("Put of a new key with failing outbox succeeded")
	}
	if _, _, err := kv.Delete(ctx, db, "a"); err == nil {
		t.Fatal("Delete with failing outbox succeeded")
	}
	e, ok, _ := kv.Get(ctx, db, "a")
	if !ok || string(e.Value) != "1" || e.Version != 1 {
		t.Errorf("row after failed Put = %+v, %v", e, ok)
	}
	if _, ok, _ := kv.Get(ctx, db, "b"); ok {
		t.Error("failed Put created the row")
	}
	if p := pending(t, db); len(p) != 1 {
		t.Errorf("outbox has %d events, want 1", len(p))
	}
}

func TestDelete(t *testing.T) {
	ctx := context.Background()
	db, st := openProducer(t), newStore(t)
	if _, existed, err := kv.Delete(ctx, db, "missing"); existed || err != nil {
		t.Fatalf("Delete of a missing key: %v, %v", existed, err)
	}
	if len(pending(t, db)) != 0 {
		t.Fatal("Delete of a missing key appended an event")
	}
	kv.Put(ctx, db, st, "k", []byte("v"))
	kv.Put(ctx, db, st, "k", []byte("v"))
	ev, existed, err := kv.Delete(ctx, db, "k")
	if err != nil || !existed {
		t.Fatalf("Delete = %v, %v", existed, err)
	}
	if ev.Type != kv.TypeDelete || ev.Key != "k" || ev.Version != 3 || ev.BaseVersion != 2 || ev.ArtifactRef != "" {
		t.Errorf("event = %+v", ev)
	}
	if _, ok, _ := kv.Get(ctx, db, "k"); ok {
		t.Error("row still exists")
	}
	if p := pending(t, db); len(p) != 3 || p[2].EventID != ev.EventID {
		t.Errorf("outbox = %+v", p)
	}
}

// TestReplication publishes a producer's outbox to a node through an applier
// and checks that the node's table is identical.
func TestReplication(t *testing.T) { testReplication(t, openProducer(t)) }

// testReplication replays a history of Puts and Deletes on prod to a SQLite
// node and checks that the node's table equals the producer's.
func testReplication(t *testing.T, prod *sql.DB) {
	ctx := context.Background()
	st := newStore(t)
	ops := []struct {
		del   bool
		key   string
		value string
	}{
		{false, "a", "1"}, {false, "b", "2"}, {false, "a", "3"}, {true, "b", ""},
		{false, "c", ""}, {false, "b", "again"}, {true, "zz", ""}, {false, "ünïcode/key", strings.Repeat("x", 5000)},
		{true, "c", ""}, {false, "c", "back"},
	}
	for _, op := range ops {
		var err error
		if op.del {
			_, _, err = kv.Delete(ctx, prod, op.key)
		} else {
			_, err = kv.Put(ctx, prod, st, op.key, []byte(op.value))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	src := &fakeSource{}
	for i, e := range pending(t, prod) {
		e.ControlVersion = uint64(10 + 3*i) // as a broker would stamp them
		src.events = append(src.events, e)
	}
	// The first event is delivered twice (published again past the dedup
	// window): the node must not change.
	dup := src.events[0]
	dup.ControlVersion = 1000
	src.events = append(src.events, dup)

	node := openNode(t)
	a, err := applier.New(node, src, st, &applier.Config{Handlers: kv.Handlers(), MaxBatch: 4})
	if err != nil {
		t.Fatal(err)
	}
	for {
		n, err := a.Step(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	want, err := kv.Digest(ctx, prod)
	if err != nil {
		t.Fatal(err)
	}
	got, err := kv.Digest(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		pl, _ := kv.List(ctx, prod)
		nl, _ := kv.List(ctx, node)
		t.Fatalf("node digest %s != producer %s\nproducer %+v\nnode %+v", got, want, pl, nl)
	}
	list, _ := kv.List(ctx, node)
	var keys []string
	for _, e := range list {
		keys = append(keys, e.Key)
	}
	if strings.Join(keys, ",") != "a,b,c,ünïcode/key" {
		t.Errorf("node keys = %v", keys)
	}
	if st := a.Status(); st.Duplicates != 1 || st.Applied != 9 {
		t.Errorf("Status = %+v", st)
	}
	// The digest is sensitive to a changed value.
	if _, err := node.Exec(`UPDATE controlfeed_kv SET value = 'tampered' WHERE key = 'a'`); err != nil {
		t.Fatal(err)
	}
	if d, _ := kv.Digest(ctx, node); d == want {
		t.Error("digest did not change with the value")
	}
}

func TestHandlers_InvalidKeyHalts(t *testing.T) {
	ctx := context.Background()
	node := openNode(t)
	src := &fakeSource{events: []controlevent.Event{{EventID: "e1", Type: kv.TypeDelete, Key: "bad\x01key", ControlVersion: 1}}}
	a, err := applier.New(node, src, nil, &applier.Config{Handlers: kv.Handlers()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Step(ctx); !errors.Is(err, applier.ErrHalted) || !errors.Is(err, kv.ErrInvalidKey) {
		t.Fatalf("Step = %v", err)
	}
}

func FuzzValidateKey(f *testing.F) {
	for _, s := range []string{"", "a", "tenants/acme", "a\x00", "\x7f", "\u0085", "é", "\xff\xfe", strings.Repeat("x", 1025)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		err := kv.ValidateKey(key)
		if err != nil {
			if !errors.Is(err, kv.ErrInvalidKey) {
				t.Fatalf("error %v does not wrap ErrInvalidKey", err)
			}
			return
		}
		if key == "" || len(key) > controlevent.MaxKeyLen || !utf8.ValidString(key) {
			t.Fatalf("accepted %q", key)
		}
		for _, r := range key {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("accepted control character in %q", key)
			}
		}
		// An accepted key is also a valid event key.
		e := controlevent.Event{EventID: "e", Type: kv.TypePut, Key: key, ControlVersion: 1}
		if err := e.Validate(); err != nil {
			t.Fatalf("accepted key fails event validation: %v", err)
		}
	})
}

// FuzzKVPayload applies a kv.put of arbitrary bytes under an arbitrary key
// and checks Get returns exactly those bytes, or that the key was rejected.
func FuzzKVPayload(f *testing.F) {
	f.Add("k", []byte("v"))
	f.Add("k", []byte{})
	f.Add("k/\u00e9", []byte{0, 1, 2, 0xff})
	f.Add("bad\n", []byte("x"))
	db := openNode(f)
	put := kv.Handlers()[kv.TypePut]
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		ctx := context.Background()
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = put(ctx, tx, controlevent.Event{EventID: "e", Type: kv.TypePut, Key: key, Version: 7, ControlVersion: 1}, value)
		if kv.ValidateKey(key) != nil {
			tx.Rollback()
			if err == nil {
				t.Fatalf("handler accepted invalid key %q", key)
			}
			return
		}
		if err != nil {
			tx.Rollback()
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		e, ok, err := kv.Get(ctx, db, key)
		if err != nil || !ok || !bytes.Equal(e.Value, value) || e.Version != 7 {
			t.Fatalf("Get(%q) = %+v, %v, %v; want value %q", key, e, ok, err, value)
		}
	})
}
