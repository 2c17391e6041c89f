package console_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/fleet"
	"github.com/controlfeed/controlfeed/internal/console"
)

// synthetic returns n rows: mostly synced, a few lagging, halted, stale.
func synthetic(n int) []fleet.Row {
	rows := make([]fleet.Row, n)
	now := time.Now()
	for i := range rows {
		r := fleet.Row{Node: fmt.Sprintf("edge-%04d", i), State: fleet.StateSynced, Cursor: 5000, SeenAt: now,
			Digest: fleet.Agreement{Status: fleet.AgreementAgrees, Agrees: n - 1}}
		switch {
		case i%97 == 3:
			r.State, r.Cursor, r.LagEvents = fleet.StateHalted, 4990, 10
			r.Halted = &fleet.Halt{EventID: "01a2", ControlVersion: 4991, Type: "kv.put", Error: "artifact <too large>"}
		case i%50 == 7:
			r.State, r.Cursor, r.LagEvents = fleet.StateLagging, 4000+uint64(i), 1000-uint64(i)%1000
		case i%333 == 5:
			r.State, r.ReportAgeSeconds = fleet.StateStale, 120
		}
		z := float64(r.LagEvents)
		r.LagSeconds = &z
		rows[i] = r
	}
	return rows
}

func newConsole(rows []fleet.Row) *console.Console {
	return console.New(console.Config{Title: "test",
		Fleet: func(context.Context) (console.FleetSnapshot, error) {
			return console.FleetSnapshot{Rows: rows, Head: 5000}, nil
		},
		Producer: func(context.Context) (console.ProducerSnapshot, error) {
			return console.ProducerSnapshot{Pending: 3, Dead: 1, Published: 42}, nil
		},
		Events: func(context.Context, int) ([]controlevent.Event, error) {
			return []controlevent.Event{{EventID: "e1", Type: "kv.put", Key: "<script>", ControlVersion: 5000}}, nil
		},
	})
}

func TestConsole_Page(t *testing.T) {
	mux := http.NewServeMux()
	newConsole(synthetic(1000)).Register(mux, nil)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(path string) string {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	page := get("/")
	// Problems first: the first row is a halted node.
	first := page[strings.Index(page, "<tr class="):]
	if !strings.HasPrefix(first, `<tr class="bad halted" data-node="edge-0003"`) {
		t.Errorf("first row %.80q: want the halted edge-0003", first)
	}
	if strings.Contains(page, "<script>\"") || !strings.Contains(page, "&lt;script&gt;") || !strings.Contains(page, "artifact &lt;too large&gt;") {
		t.Error("the page does not escape the event's key or the halt's error")
	}
	if !strings.Contains(page, "showing the first 500") || !strings.Contains(page, `id="outbox-dead" class="badtext">1<`) {
		t.Error("the page lacks its row limit note or the producer's outbox")
	}
	f := get("/?q=problem&limit=2000")
	if n := strings.Count(f, "<tr class=\"bad"); n != strings.Count(f, "data-node=") || n == 0 {
		t.Errorf("q=problem: %d problem rows of %d", n, strings.Count(f, "data-node="))
	}
	if n := strings.Count(get("/?q=edge-0999"), "data-node="); n != 1 {
		t.Errorf("q=edge-0999: %d rows, want 1", n)
	}
	if !strings.Contains(get("/console/assets/console.js"), "EventSource") {
		t.Error("the script is not served")
	}
	// The event stream sends the live section at once.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/console/events?q=halted", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("content type %q", ct)
	}
	buf := make([]byte, 1<<16)
	var got strings.Builder
	for !strings.Contains(got.String(), "\n\n") {
		n, err := resp.Body.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("read the stream: %v (%q)", err, got.String())
		}
	}
	ev := got.String()
	if !strings.Contains(ev, "event: live\n") || !strings.Contains(ev, `data: <tr class="bad halted" data-node="edge-0003"`) || strings.Contains(ev, `data-state="synced"`) {
		t.Errorf("first event: %.300q", ev)
	}
	for _, m := range []string{"POST", "DELETE"} {
		req, _ := http.NewRequest(m, srv.URL+"/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s /: %d, want 405", m, resp.StatusCode)
		}
	}
}

// BenchmarkRenderPage renders the page of a 1,000-node fleet (every row:
// limit 1000), as "/" does, sampling each time.
func BenchmarkRenderPage(b *testing.B) {
	rows := synthetic(1000)
	now := time.Now()
	for _, limit := range []int{500, 1000} {
		b.Run(fmt.Sprintf("rows=%d", limit), func(b *testing.B) {
			c := console.New(console.Config{
				Fleet: func(context.Context) (console.FleetSnapshot, error) {
					return console.FleetSnapshot{Rows: rows, Head: 5000}, nil
				},
				Now: func() time.Time { now = now.Add(time.Second); return now }, // a fresh sample per render
			})
			var n int64
			for b.Loop() {
				var w countWriter
				if err := c.RenderPage(context.Background(), &w, "", limit); err != nil {
					b.Fatal(err)
				}
				n = int64(w)
			}
			b.SetBytes(n)
		})
	}
}

type countWriter int

func (w *countWriter) Write(p []byte) (int, error) { *w += countWriter(len(p)); return len(p), nil }
