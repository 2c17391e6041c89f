package natsobject_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/natsobject"
	"github.com/controlfeed/controlfeed/internal/natsembed"
)

// A replica that lags behind the bucket's leader answers a direct get for
// an object the producer has just stored with "not found" (on a 3-server
// cluster, a member restarted or catching up after a leader change). Get
// must not report it missing (a node halts on artifact.ErrNotFound): the
// leader holds it, so the read is a transient failure. An object the
// leader does not hold either is still missing.
//
// The lagging replica is simulated on one server: the bucket's stream
// stops answering direct gets (AllowDirect off, which the store's cached
// stream info does not know), and a responder on the direct-get subject
// answers every read with the 404 a lagging replica sends.
func TestGet_LaggingReplicaIsNotMissing(t *testing.T) {
	srv := natsembed.StartForTest(t)
	ctx := context.Background()
	h := newHarness(ctx, t, srv)
	s, err := natsobject.New(ctx, h.cfg, &natsobject.Options{SpoolDir: h.spool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	data := []byte("stored on the leader, not yet on the replica that answers")
	ref, err := s.Put(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}

	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	setDirect := func(on bool) {
		t.Helper()
		st, err := js.Stream(ctx, "OBJ_"+h.cfg.Bucket)
		if err != nil {
			t.Fatal(err)
		}
		cfg := st.CachedInfo().Config
		cfg.AllowDirect = on
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	setDirect(false)
	lagging, err := nc.Subscribe("$JS.API.DIRECT.GET.OBJ_"+h.cfg.Bucket+".>", func(m *nats.Msg) {
		r := nats.NewMsg(m.Reply)
		r.Header.Set("Status", "404")
		r.Header.Set("Description", "Message Not Found")
		m.RespondMsg(r)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	_, err = s.Get(ctx, ref)
	if err == nil {
		t.Fatal("Get succeeded with only a lagging replica answering")
	}
	if errors.Is(err, artifact.ErrNotFound) {
		t.Fatalf("Get reported an object the leader holds as missing (a node would halt): %v", err)
	}
	t.Logf("Get while the replica lags: %v", err)
	absent := artifact.RefOf([]byte("never stored"))
	if _, err := s.Get(ctx, absent); !errors.Is(err, artifact.ErrNotFound) {
		t.Fatalf("Get of an object the leader does not hold either: %v, want artifact.ErrNotFound", err)
	}

	// The replica catches up: the object reads back.
	lagging.Unsubscribe()
	setDirect(true)
	rc, err := s.Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get after the catch-up: %q, %v", got, err)
	}
}
