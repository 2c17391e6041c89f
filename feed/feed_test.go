package feed_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/controlfeed/controlfeed/feed"
	_ "github.com/controlfeed/controlfeed/feed/filesource"
	_ "github.com/controlfeed/controlfeed/feed/nop"
)

func mustPanic(t *testing.T, want string, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		if r == nil {
			t.Fatalf("no panic, want one containing %q", want)
		}
		if msg, _ := r.(string); !strings.Contains(msg, want) {
			t.Fatalf("panic %v, want one containing %q", r, want)
		}
	}()
	f()
}

// The registry is process-global: tests that register extra names remove
// them when they end (Unregister, export_test.go), so the tests that check
// the exact list of names (file, nop) hold in any order and with -count > 1.

func TestRegister_Panics(t *testing.T) {
	src := func(feed.SourceConfig) (feed.Source, error) { return nil, nil }
	sink := func(feed.SourceConfig) (feed.Sink, error) { return nil, nil }
	mustPanic(t, "empty name", func() { feed.Register("", src) })
	mustPanic(t, "empty name", func() { feed.RegisterSink("", sink) })
	mustPanic(t, `"feedtest-nil" registered with a nil constructor`, func() { feed.Register("feedtest-nil", nil) })
	mustPanic(t, `"feedtest-nil" registered with a nil constructor`, func() { feed.RegisterSink("feedtest-nil", nil) })
	mustPanic(t, `"nop" registered twice`, func() { feed.Register("nop", src) })
	mustPanic(t, `"file" registered twice`, func() { feed.RegisterSink("file", sink) })
	// The failed registrations left nothing behind.
	if got, want := feed.Sources(), []string{"file", "nop"}; !slices.Equal(got, want) {
		t.Fatalf("Sources() = %q, want %q", got, want)
	}
}

func TestOpen_Unknown(t *testing.T) {
	_, err := feed.Open("nats", feed.SourceConfig{})
	if want := `feed: unknown source "nats" (forgotten import?); available: file, nop`; err == nil || err.Error() != want {
		t.Fatalf("Open(nats) error = %v\nwant %s", err, want)
	}
	_, err = feed.OpenSink("kafka", feed.SourceConfig{})
	if want := `feed: unknown sink "kafka" (forgotten import?); available: file, nop`; err == nil || err.Error() != want {
		t.Fatalf("OpenSink(kafka) error = %v\nwant %s", err, want)
	}
}

func TestSourcesSinks_Sorted(t *testing.T) {
	// Register in reverse order; the listing is sorted regardless.
	for _, n := range []string{"zz-registry-test", "aa-registry-test"} {
		t.Cleanup(func() { feed.Unregister(n) })
		feed.Register(n, func(feed.SourceConfig) (feed.Source, error) { return nil, nil })
		feed.RegisterSink(n, func(feed.SourceConfig) (feed.Sink, error) { return nil, nil })
	}
	want := []string{"aa-registry-test", "file", "nop", "zz-registry-test"}
	if got := feed.Sources(); !slices.Equal(got, want) {
		t.Fatalf("Sources() = %q, want %q", got, want)
	}
	if got := feed.Sinks(); !slices.Equal(got, want) {
		t.Fatalf("Sinks() = %q, want %q", got, want)
	}
	// The returned slice is the caller's.
	got := feed.Sources()
	got[0] = "scribbled"
	if feed.Sources()[0] != "aa-registry-test" {
		t.Fatal("modifying the result of Sources() changed the registry")
	}
}

func TestOpen_ConstructorError(t *testing.T) {
	boom := errors.New("boom")
	t.Cleanup(func() { feed.Unregister("failing-registry-test") })
	feed.Register("failing-registry-test", func(feed.SourceConfig) (feed.Source, error) { return nil, boom })
	feed.RegisterSink("failing-registry-test", func(feed.SourceConfig) (feed.Sink, error) { return nil, boom })
	if _, err := feed.Open("failing-registry-test", feed.SourceConfig{}); !errors.Is(err, boom) || !strings.Contains(err.Error(), `feed: open source "failing-registry-test"`) {
		t.Fatalf("Open error = %v", err)
	}
	if _, err := feed.OpenSink("failing-registry-test", feed.SourceConfig{}); !errors.Is(err, boom) || !strings.Contains(err.Error(), `feed: open sink "failing-registry-test"`) {
		t.Fatalf("OpenSink error = %v", err)
	}
}

func TestOpen_PassesConfig(t *testing.T) {
	var got feed.SourceConfig
	t.Cleanup(func() { feed.Unregister("config-registry-test") })
	feed.Register("config-registry-test", func(c feed.SourceConfig) (feed.Source, error) { got = c; return nil, nil })
	if _, err := feed.Open("config-registry-test", feed.SourceConfig{FileDir: "/x"}); err != nil || got.FileDir != "/x" {
		t.Fatalf("constructor got %+v, %v", got, err)
	}
}

func TestCursorBehindError(t *testing.T) {
	var err error = &feed.CursorBehindError{Source: "file", Cursor: 10, FirstAvailable: 50}
	err = errors.Join(errors.New("context"), err)
	if !errors.Is(err, feed.ErrCursorBehindRetention) {
		t.Fatal("CursorBehindError does not match ErrCursorBehindRetention")
	}
	var cbe *feed.CursorBehindError
	if !errors.As(err, &cbe) || cbe.Cursor != 10 {
		t.Fatal("errors.As failed")
	}
	for _, s := range []string{"cursor 10", "11..49", "snapshot"} {
		if !strings.Contains(cbe.Error(), s) {
			t.Errorf("message %q lacks %q", cbe.Error(), s)
		}
	}
}
