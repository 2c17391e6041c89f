package natsconn

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestRedactURLs(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://alice:S3cr3tPW@host:4222", "nats://alice:REDACTED@host:4222"},
		{"nats://s3cr3ttoken@host:4222", "nats://REDACTED@host:4222"},
		{"tls://alice:p%40ss@h", "tls://alice:REDACTED@h"},
		{"nats://alice:S3cr3tPW@host:bad port", "nats://REDACTED@host:bad port"},
		{"alice:S3cr3tPW@host:4222", "REDACTED@host:4222"},
	} {
		if got := RedactURLs([]string{tc.in}); got != tc.want {
			t.Errorf("RedactURLs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	got := RedactURLs([]string{"nats://a:x1@h1", " nats://b:x2@h2"})
	if strings.Contains(got, "x1") || strings.Contains(got, "x2") || !strings.Contains(got, "h1") {
		t.Errorf("RedactURLs(list) = %q", got)
	}
}

func TestScrub(t *testing.T) {
	base := errors.New("sentinel")
	err := fmt.Errorf(`parse "nats://alice:S3cr3tPW@host:bad": invalid port; token tok3n; password envPW: %w`, base)
	got := Scrub(err, []string{"nats://alice:S3cr3tPW@host:bad", "nats://tok3n@h"}, Auth{Password: "envPW"})
	for _, secret := range []string{"S3cr3tPW", "tok3n", "envPW"} {
		if strings.Contains(got.Error(), secret) {
			t.Errorf("Scrub kept %q: %v", secret, got)
		}
	}
	if !errors.Is(got, base) {
		t.Errorf("Scrub hid the wrapped error: %v", got)
	}
	if Scrub(nil, nil, Auth{}) != nil {
		t.Error("Scrub(nil) != nil")
	}
}

func TestConnect_ErrorIsRedacted(t *testing.T) {
	// A port nobody listens on, and one that does not parse.
	for _, u := range []string{"nats://alice:S3cr3tPW@127.0.0.1:1", "nats://alice:S3cr3tPW@127.0.0.1:bad"} {
		_, err := Connect("test", []string{u}, Auth{Password: "S3cr3tPW"}, Options("t", 0, Auth{})...)
		if err == nil {
			t.Fatalf("Connect(%q) succeeded", u)
		}
		if strings.Contains(err.Error(), "S3cr3tPW") {
			t.Errorf("Connect(%q) error carries the password: %v", u, err)
		}
		if !strings.Contains(err.Error(), "REDACTED") {
			t.Errorf("Connect(%q) error does not name the server: %v", u, err)
		}
	}
}
