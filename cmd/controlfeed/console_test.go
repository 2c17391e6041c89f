package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/controlfeed/controlfeed/internal/browsertest"
	"github.com/controlfeed/controlfeed/internal/freeport"
)

// freePort returns a loopback address nobody listens on (now).
func freePort(t *testing.T) string {
	t.Helper()
	return freeport.MustAddr(t)
}

// TestConsole_Browser runs a producer and three nodes on a file feed, opens
// the producer's console in headless chromium, sees the three nodes, makes
// one halt (an artifact over its --max-artifact-bytes) and sees its row
// turn halted without a reload; then checks the token guards the page and
// its event stream. CONTROLFEED_CONSOLE_SCREENSHOT=FILE saves a screenshot
// (docs/console.png is one).
func TestConsole_Browser(t *testing.T) {
	bctx := browsertest.New(t, 1200, 820)
	dir := t.TempDir()
	const token = "console-test-token-0123456789"
	env := []string{"CONTROLFEED_FEED_DIR=" + filepath.Join(dir, "feed"), "CONTROLFEED_ARTIFACT_DIR=" + filepath.Join(dir, "art"),
		"CONTROLFEED_POLL_INTERVAL=20ms", "CONTROLFEED_FLEET_HEARTBEAT=200ms"}
	ctx, cancel := context.WithCancel(context.Background())
	done := map[string]chan error{}
	defer func() {
		cancel()
		for name, d := range done {
			if err := <-d; err != nil {
				t.Errorf("serve %s: %v", name, err)
			}
		}
	}()
	serve := func(name string, args ...string) {
		d := make(chan error, 1)
		done[name] = d
		go func() {
			m := &Main{Environ: func() []string { return env }}
			d <- m.Run(ctx, append([]string{"serve", "--db", filepath.Join(dir, name+".db"), "--node-name", name}, args...))
		}()
	}
	// The port freePort found may be taken before the producer binds it
	// (another test's server in this package picked it meanwhile: CI saw
	// "address already in use"): then the producer exits at once, and it
	// is started again on another port.
	var addr string
	for try := 1; ; try++ {
		addr = freePort(t)
		serve("producer", "--feed-sink", "file", "--listen", addr, "--listen-token", token)
		var err error
		up := false
		for deadline := time.Now().Add(10 * time.Second); !up && err == nil && time.Now().Before(deadline); {
			select {
			case err = <-done["producer"]:
			case <-time.After(20 * time.Millisecond):
				if resp, gerr := http.Get("http://" + addr + "/healthz"); gerr == nil {
					resp.Body.Close()
					up = true
				}
			}
		}
		if up {
			break
		}
		if err == nil || !strings.Contains(err.Error(), "address already in use") || try == 5 {
			delete(done, "producer")
			t.Fatalf("the producer's listener on %s (try %d): %v", addr, try, err)
		}
		t.Logf("the producer's port %s was taken before it bound it; another port (try %d)", addr, try)
	}
	pdb := filepath.Join(dir, "producer.db")
	mustRun(t, env, "", "kv", "put", "--db", pdb, "greeting", "hello")
	serve("edge-a", "--feed-source", "file")
	serve("edge-b", "--feed-source", "file")
	serve("edge-c", "--feed-source", "file", "--max-artifact-bytes", "4096")
	base := "http://" + addr

	get := func(path, auth string) int {
		req, _ := http.NewRequest("GET", base+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitFor(t, 10*time.Second, "the producer's listener", func() bool { return get("/healthz", "") != 0 })
	for _, p := range []string{"/", "/v1/console/events", "/console/assets/console.js"} {
		if c := get(p, ""); c != http.StatusUnauthorized {
			t.Errorf("GET %s without the token: %d, want 401", p, c)
		}
	}

	// The browser sends the token as HTTP Basic credentials, as a person
	// answering its prompt would; the event stream then carries it too.
	bctx, cancelB := context.WithTimeout(bctx, 45*time.Second) // a bound for a loaded machine, not a timing
	defer cancelB()
	page := "http://u:" + token + "@" + addr + "/"
	rows := `Array.from(document.querySelectorAll("#nodes tbody tr[data-node]")).map(r => r.dataset.node + "=" + r.dataset.state).sort().join(" ")`
	var got string
	err := chromedp.Do(bctx,
		chromedp.Navigate(page),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Evaluate[bool](`window.notReloaded = true`)(ctx, tg)
			return err
		}),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Poll[bool](`document.querySelectorAll('#nodes tr[data-state="synced"]').length == 3 && document.getElementById("conn").textContent == "live"`,
				chromedp.WithPollingInterval(50*time.Millisecond))(ctx, tg)
			return err
		}),
	)
	if err != nil {
		got, _ = chromedp.Run(context.WithoutCancel(bctx), chromedp.Evaluate[string](rows))
		t.Fatalf("the console never showed three synced nodes: %v (rows: %q)", err, got)
	}

	// An event whose artifact edge-c refuses halts it.
	mustRun(t, env, "", "kv", "put", "--db", pdb, "big", strings.Repeat("x", 6000))
	err = chromedp.Do(bctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Poll[bool](`window.notReloaded === true && document.querySelector('#nodes tbody tr[data-node]').dataset.node == "edge-c" &&
			document.querySelector('#nodes tr[data-node="edge-c"]').dataset.state == "halted" &&
			document.querySelectorAll('#nodes tr[data-state="synced"]').length == 2`,
			chromedp.WithPollingInterval(50*time.Millisecond))(ctx, tg)
		return err
	}))
	got, _ = chromedp.Run(context.WithoutCancel(bctx), chromedp.Evaluate[string](rows))
	if err != nil {
		t.Fatalf("the console did not show edge-c halted first, without a reload: %v (rows: %q)", err, got)
	}
	if want := "edge-a=synced edge-b=synced edge-c=halted"; got != want {
		t.Errorf("rows %q, want %q", got, want)
	}
	why, err := chromedp.Run(bctx, chromedp.Evaluate[string](`document.querySelector('#nodes tr[data-node="edge-c"] td.why').textContent`))
	if err != nil || !strings.Contains(why, "kv.put") {
		t.Errorf("edge-c's halt cell %q (%v): want the halted event", why, err)
	}

	// The filter box narrows the table, live.
	err = chromedp.Do(bctx,
		chromedp.SendKeys(`input[name=q]`, "problem"),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Poll[bool](`window.notReloaded === true && location.search == "?q=problem" && document.querySelectorAll('#nodes tbody tr[data-node]').length == 1`,
				chromedp.WithPollingInterval(50*time.Millisecond))(ctx, tg)
			return err
		}))
	if err != nil {
		got, _ = chromedp.Run(context.WithoutCancel(bctx), chromedp.Evaluate[string](rows))
		t.Fatalf("filtering by \"problem\": %v (rows: %q)", err, got)
	}
	if f := os.Getenv("CONTROLFEED_CONSOLE_SCREENSHOT"); f != "" {
		if err := chromedp.Do(bctx, chromedp.Navigate(page)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond)
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, png, 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Println("wrote", f)
	}
}
