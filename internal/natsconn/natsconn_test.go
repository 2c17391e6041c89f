package natsconn

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func apply(t *testing.T, opts []nats.Option) nats.Options {
	t.Helper()
	o := nats.GetDefaultOptions()
	for _, f := range opts {
		if err := f(&o); err != nil {
			t.Fatal(err)
		}
	}
	return o
}

func TestOptions(t *testing.T) {
	o := apply(t, Options("controlfeed-test", 250*time.Millisecond, Auth{User: "u", Password: "p"}))
	if o.Name != "controlfeed-test" || o.MaxReconnect != -1 || o.ReconnectWait != 250*time.Millisecond {
		t.Errorf("name %q, max reconnect %d, wait %v", o.Name, o.MaxReconnect, o.ReconnectWait)
	}
	if o.User != "u" || o.Password != "p" {
		t.Errorf("user %q password %q", o.User, o.Password)
	}
	// extra options come last and win.
	o = apply(t, Options("a", time.Second, Auth{}, nats.Name("b")))
	if o.Name != "b" || o.User != "" {
		t.Errorf("with an override: name %q user %q", o.Name, o.User)
	}
	// A CA file that does not exist fails when the option is applied, so a
	// misconfigured TLS setting is reported at start-up.
	f := Options("a", time.Second, Auth{TLSCAFile: "/nonexistent/ca.pem"})
	o = nats.GetDefaultOptions()
	var failed bool
	for _, opt := range f {
		if err := opt(&o); err != nil {
			failed = true
		}
	}
	if !failed {
		t.Error("a missing TLS CA file was accepted")
	}
}
