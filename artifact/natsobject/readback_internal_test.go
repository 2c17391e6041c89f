package natsobject

import (
	"bytes"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/internal/natsembed"
)

// When another process's Put of the same content replaces the upload a
// Put is reading back, the old upload's chunks are purged: that is not
// damage, and must not make Put upload over the whole object (which would
// purge the other process's chunks in turn). confirmStored reads back the
// upload that replaced it instead.
func TestConfirmStored_ReplacedUpload(t *testing.T) {
	ctx := t.Context()
	srv := natsembed.StartForTest(t)
	s, err := New(ctx, artifact.NATSConfig{URLs: []string{srv.ClientURL()}, Bucket: "replaced", Create: true}, &Options{SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data := bytes.Repeat([]byte("abcdefgh"), 3*128*1024/8)
	ref, err := artifact.PutBytes(ctx, s, data)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	obs, err := js.ObjectStore(ctx, "replaced")
	if err != nil {
		t.Fatal(err)
	}
	old, err := obs.GetInfo(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.PutBytes(ctx, ref, data); err != nil { // the other process's Put
		t.Fatal(err)
	}
	p, err := s.confirmStored(ctx, ref, uint64(len(data)), old)
	if err != nil || p != "" {
		t.Fatalf("confirmStored of an upload replaced by a whole one: problem %q, err %v; want none (nothing to upload again)", p, err)
	}

	// Chunks gone while the metadata stays: damage, to upload again.
	cur, err := obs.GetInfo(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "OBJ_replaced")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject(chunkSubject("replaced", cur.NUID))); err != nil {
		t.Fatal(err)
	}
	if p, err := s.confirmStored(ctx, ref, uint64(len(data)), cur); err != nil || p == "" {
		t.Fatalf("confirmStored of an upload whose chunks are gone: problem %q, err %v; want a problem", p, err)
	}
}
