package natsembed_test

import (
	"context"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/internal/natsembed"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestStart_Validate(t *testing.T) {
	for name, o := range map[string]natsembed.Options{
		"NoStoreDir": {},
		"BadListen":  {StoreDir: t.TempDir(), Listen: "nohost"},
		"BadPort":    {StoreDir: t.TempDir(), Listen: "127.0.0.1:x"},
	} {
		t.Run(name, func(t *testing.T) {
			if s, err := natsembed.Start(o); err == nil {
				s.Shutdown()
				t.Fatal("Start succeeded, want an error")
			}
		})
	}
}

func TestRestartKeepsStreams(t *testing.T) {
	ctx := context.Background()
	s := natsembed.StartForTest(t)
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "s", []byte("x")); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	url := s.ClientURL()

	s2 := natsembed.RestartForTest(t, s)
	if s2.ClientURL() != url {
		t.Fatalf("restarted on %s, want %s", s2.ClientURL(), url)
	}
	nc, err = nats.Connect(s2.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ = jetstream.New(nc)
	st, err := js.Stream(ctx, "S")
	if err != nil {
		t.Fatalf("stream after restart: %v", err)
	}
	if n := st.CachedInfo().State.Msgs; n != 1 {
		t.Fatalf("stream holds %d messages after restart, want 1", n)
	}
}

func TestStart_PortInUse(t *testing.T) {
	s := natsembed.StartForTest(t)
	s2, err := natsembed.Start(natsembed.Options{Listen: s.Addr(), StoreDir: t.TempDir(), ReadyTimeout: 300 * time.Millisecond})
	if err == nil {
		s2.Shutdown()
		t.Fatal("second server on the same port started")
	}
}
