// Package browsertest gives tests a real headless browser: Debian's
// chromium, driven by chromedp.
//
// Without a chromium (or google-chrome) on PATH a test that needs one is
// skipped, with a message saying how to install it, except under CI=true,
// where it fails: CI (.ci/run) installs chromium, so a missing one is a
// broken run, not a reason to test less. By hand: apt-get install chromium.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/chromedp/chromedp"
)

// names are the executables looked up on PATH, in order.
var names = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// ExecPath returns the browser's executable. Without one it skips t, or
// fails it when CI=true.
func ExecPath(t testing.TB) string {
	t.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	msg := "no chromium on PATH: this test needs a headless browser; install Debian's chromium (apt-get install chromium)"
	if os.Getenv("CI") == "true" {
		t.Fatal("browsertest: " + msg + "; CI must provide it (.ci/run installs it)")
	}
	t.Skip("browsertest: " + msg)
	return ""
}

// New starts a headless browser for t and returns a chromedp context for
// one tab; the browser exits when t ends. The window is w×h pixels.
func New(t testing.TB, w, h int) context.Context {
	t.Helper()
	path := ExecPath(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // CI runs as root
		chromedp.DisableGPU,
		chromedp.WindowSize(w, h),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancelB(); cancelA() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("browsertest: start %s: %v", path, err)
	}
	return ctx
}
