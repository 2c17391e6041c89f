package console_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/controlfeed/controlfeed/internal/browsertest"
)

// TestConsole_Browser1000 loads the page of 1,000 synthetic nodes (every
// row) in headless chromium and logs how long the first render and the
// first pushed update take. It times nothing it asserts; it runs only with
// CONTROLFEED_CONSOLE_TIMING=1 (go test -v to see the figures).
func TestConsole_Browser1000(t *testing.T) {
	if os.Getenv("CONTROLFEED_CONSOLE_TIMING") != "1" {
		t.Skip("set CONTROLFEED_CONSOLE_TIMING=1 to time the console of 1,000 nodes in chromium")
	}
	bctx := browsertest.New(t, 1200, 900)
	mux := http.NewServeMux()
	newConsole(synthetic(1000)).Register(mux, nil)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer srv.CloseClientConnections() // the event stream ends only with its connection
	bctx, cancel := context.WithTimeout(bctx, 30*time.Second)
	defer cancel()
	start := time.Now()
	if err := chromedp.Do(bctx, chromedp.Navigate(srv.URL+"/?limit=1000")); err != nil {
		t.Fatal(err)
	}
	loaded := time.Since(start)
	n, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll("#nodes tr[data-node]").length`))
	if err != nil || n != 1000 {
		t.Fatalf("%d rows (%v), want 1000", n, err)
	}
	// Time one pushed replacement of the live section, in the page.
	ms, err := chromedp.Run(bctx, chromedp.Evaluate[float64](`new Promise(res => {
		const t0 = performance.now();
		new MutationObserver((_, o) => { o.disconnect(); requestAnimationFrame(() => res(performance.now() - t0)); })
			.observe(document.getElementById("live"), {childList: true});
	})`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	upd, err := chromedp.Run(bctx, chromedp.Evaluate[float64](`(() => {
		const html = document.getElementById("live").innerHTML, t0 = performance.now();
		document.getElementById("live").innerHTML = html; document.body.offsetHeight;
		return performance.now() - t0; })()`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("1,000 nodes: navigate+load %v; wait for the next pushed update %.0f ms; replace+layout of the live section %.1f ms", loaded.Round(time.Millisecond), ms, upd)
}
