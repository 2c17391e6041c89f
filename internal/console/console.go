// Package console serves the live console of a controlfeed process: one
// server-rendered web page at "/" showing the fleet table (fleet.View over
// the process's report store), a chart of each lagging node's lag over the
// last minutes, a producer's outbox and publish rate, and the latest events
// at the feed's head, kept current by server-sent events on
// /v1/console/events (or, without JavaScript, by a meta refresh).
//
// The page is html/template plus assets embedded with embed: no build step
// and no network access beyond the process itself. Every route is a GET
// that reads; nothing on the page changes state. The caller wraps the
// handler in its own authorization (see Register).
//
// # Cost
//
// The console reads its sources only while someone looks: a request or an
// open event stream takes a sample when the latest is older than
// Config.Interval, so many viewers share one read per interval and an
// unwatched process reads nothing. The lag chart is drawn from a bounded
// ring of those samples (Config.Window); its gaps are the times nobody
// looked.
package console

import (
	"cmp"
	"context"
	"embed"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/fleet"
)

//go:embed assets
var assets embed.FS

// Defaults of Config.
const (
	DefaultInterval = time.Second
	DefaultWindow   = 5 * time.Minute
	DefaultLimit    = 500
	// DefaultEvents is how many events at the feed's head the page lists.
	DefaultEvents = 8
	// chartNodes bounds the lines of the lag chart: the most lagging nodes.
	chartNodes = 8
)

// FleetSnapshot is what Config.Fleet returns: the fleet view and the feed's
// head as the process read them.
type FleetSnapshot struct {
	Rows []fleet.Row
	Head uint64
	// Errors are reports the store could not read (one line each).
	Errors []string
}

// ProducerSnapshot is a producer process's outbox and pump counters.
type ProducerSnapshot struct {
	Pending, Dead int64
	// Published counts the events this process's pump published since it
	// started; the console derives the rate from two samples.
	Published uint64
	// LastError is the pump's latest failure, empty if none.
	LastError string
}

// Config says where the console reads. Each function is called with the
// request's context, at most once per Interval across all viewers, never
// concurrently with itself; it must not block past ctx.
type Config struct {
	// Title names the process (its node name) in the page's title.
	Title string
	// Fleet returns the fleet view; nil when the process has no report
	// store (the page says so).
	Fleet func(ctx context.Context) (FleetSnapshot, error)
	// Producer returns the outbox counters; nil for a process without a
	// pump.
	Producer func(ctx context.Context) (ProducerSnapshot, error)
	// Events returns up to n events ending at the feed's head, in any
	// order; nil when the process cannot read its feed.
	Events func(ctx context.Context, n int) ([]controlevent.Event, error)
	// Interval is the sampling and push period (DefaultInterval); Window
	// the span of the lag chart (DefaultWindow).
	Interval, Window time.Duration
	// Logger receives failed reads at debug level (nil = discard).
	Logger *slog.Logger
	// Now is the clock (nil = time.Now), for tests.
	Now func() time.Time
}

// Console is the live console of one process. Its methods are safe for
// concurrent use.
type Console struct {
	cfg  Config
	page *template.Template

	mu      sync.Mutex // serializes sampling and guards the fields below
	last    *sample
	ring    []sample // oldest first, at most ringCap
	ringCap int
}

// sample is one read of the sources.
type sample struct {
	At        time.Time
	Fleet     FleetSnapshot
	FleetErr  string
	Producer  *ProducerSnapshot
	Rate      *float64 // events/s published between this sample and the previous one
	Events    []controlevent.Event
	EventsErr string
	lags      map[string]uint64 // LagEvents of the nodes behind the head
}

// New returns a console reading cfg's sources.
func New(cfg Config) *Console {
	cfg.Interval = cmp.Or(cfg.Interval, DefaultInterval)
	cfg.Window = cmp.Or(cfg.Window, DefaultWindow)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	t := template.Must(template.New("").Funcs(funcs).ParseFS(assets, "assets/*.html"))
	return &Console{cfg: cfg, page: t, ringCap: int(cfg.Window/cfg.Interval) + 1}
}

// Register adds the console's routes to mux, each wrapped by auth (the
// listener's token check; nil = none):
//
//	GET /{$}                the page (query: q filters, limit bounds rows)
//	GET /v1/console/events  server-sent events: "live", the page's live
//	                        section as HTML, every Interval
//	GET /console/assets/    the style sheet and script
func (c *Console) Register(mux *http.ServeMux, auth func(http.Handler) http.Handler) {
	if auth == nil {
		auth = func(h http.Handler) http.Handler { return h }
	}
	mux.Handle("GET /{$}", auth(http.HandlerFunc(c.servePage)))
	mux.Handle("GET /v1/console/events", auth(http.HandlerFunc(c.serveEvents)))
	mux.Handle("GET /console/assets/", auth(http.StripPrefix("/console/", http.FileServerFS(assets))))
}

// snapshot returns the latest sample, taking a new one when it is older
// than Interval.
func (c *Console) snapshot(ctx context.Context) sample {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Now()
	if c.last != nil && now.Sub(c.last.At) < c.cfg.Interval*9/10 {
		return *c.last
	}
	s := sample{At: now}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if c.cfg.Fleet != nil {
		f, err := c.cfg.Fleet(rctx)
		if err != nil {
			s.FleetErr = err.Error()
			c.cfg.Logger.Debug("console: read the fleet", "err", err)
		}
		s.Fleet = f
		s.Fleet.Rows = sortRows(f.Rows)
	}
	if c.cfg.Producer != nil {
		p, err := c.cfg.Producer(rctx)
		if err != nil {
			p.LastError = err.Error()
		}
		s.Producer = &p
		if c.last != nil && c.last.Producer != nil && p.Published >= c.last.Producer.Published {
			r := float64(p.Published-c.last.Producer.Published) / now.Sub(c.last.At).Seconds()
			s.Rate = &r
		}
	}
	if c.cfg.Events != nil {
		evs, err := c.cfg.Events(rctx, DefaultEvents)
		if err != nil {
			s.EventsErr = err.Error()
		}
		slices.SortFunc(evs, func(a, b controlevent.Event) int { return cmp.Compare(b.ControlVersion, a.ControlVersion) })
		s.Events = evs[:min(len(evs), DefaultEvents)]
	}
	s.lags = map[string]uint64{}
	for _, r := range s.Fleet.Rows {
		if r.LagEvents > 0 {
			s.lags[r.Node] = r.LagEvents
		}
	}
	c.ring = append(c.ring, s)
	for len(c.ring) > c.ringCap || (len(c.ring) > 0 && now.Sub(c.ring[0].At) > c.cfg.Window) {
		c.ring[0] = sample{}
		c.ring = c.ring[1:]
	}
	if cap(c.ring) > 4*c.ringCap { // keep the backing array bounded
		c.ring = slices.Clone(c.ring)
	}
	c.last = &s
	return s
}

// rank orders rows problems first.
func rank(r fleet.Row) int {
	switch {
	case r.Halted != nil && r.Halted.Security != "":
		return 0
	case r.State == fleet.StateHalted:
		return 1
	case r.Digest.Status == fleet.AgreementDiffers:
		return 2
	case r.State == fleet.StateUnavailable:
		return 3
	case r.State == fleet.StateStale:
		return 4
	case r.State == fleet.StateLagging:
		return 5
	case r.State == fleet.StateApplying:
		return 6
	}
	return 7
}

// sortRows sorts a copy of rows: problems first, then the most behind,
// then by name.
func sortRows(rows []fleet.Row) []fleet.Row {
	rows = slices.Clone(rows)
	slices.SortStableFunc(rows, func(a, b fleet.Row) int {
		return cmp.Or(cmp.Compare(rank(a), rank(b)), cmp.Compare(b.LagEvents, a.LagEvents), cmp.Compare(a.Node, b.Node))
	})
	return rows
}

// problem reports whether a row is highlighted.
func problem(r fleet.Row) bool { return rank(r) <= 4 }

// matches reports whether a row matches the filter q: every word of q
// appears in the node's name, state, digest agreement or halt, or is
// "problem" and the row is one.
func matches(r fleet.Row, q string) bool {
	for w := range strings.FieldsSeq(strings.ToLower(q)) {
		if w == "problem" || w == "problems" {
			if !problem(r) {
				return false
			}
			continue
		}
		hay := strings.ToLower(r.Node + " " + string(r.State) + " " + r.Digest.String() + " " + r.Problem)
		if r.Halted != nil {
			hay += " " + strings.ToLower(r.Halted.Error+" "+r.Halted.EventID)
			if r.Halted.Security != "" {
				hay += " security"
			}
		}
		if !strings.Contains(hay, w) {
			return false
		}
	}
	return true
}

// view is the template's data.
type view struct {
	Title    string
	Query    string
	Limit    int
	Interval time.Duration
	S        sample
	Rows     []fleet.Row // filtered, at most Limit
	Matched  int
	Counts   []stateCount
	Chart    chart
	HasFleet bool
}

type stateCount struct {
	State string
	N     int
}

func (c *Console) view(s sample, q string, limit int) view {
	v := view{Title: c.cfg.Title, Query: q, Limit: limit, Interval: c.cfg.Interval, S: s, HasFleet: c.cfg.Fleet != nil}
	counts := map[fleet.State]int{}
	for _, r := range s.Fleet.Rows {
		counts[r.State]++
		if !matches(r, q) {
			continue
		}
		v.Matched++
		if len(v.Rows) < limit {
			v.Rows = append(v.Rows, r)
		}
	}
	for _, st := range []fleet.State{fleet.StateStale, fleet.StateHalted, fleet.StateUnavailable, fleet.StateLagging, fleet.StateApplying, fleet.StateSynced} {
		if counts[st] > 0 {
			v.Counts = append(v.Counts, stateCount{string(st), counts[st]})
		}
	}
	c.mu.Lock()
	v.Chart = drawChart(c.ring, s.At, c.cfg.Window)
	c.mu.Unlock()
	return v
}

func params(r *http.Request) (string, int) {
	q := r.URL.Query().Get("q")
	limit := DefaultLimit
	if l, err := strconv.Atoi(r.URL.Query().Get("limit")); err == nil && l > 0 {
		limit = min(l, 100000)
	}
	return q, limit
}

func (c *Console) servePage(w http.ResponseWriter, r *http.Request) {
	q, limit := params(r)
	v := c.view(c.snapshot(r.Context()), q, limit)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := c.page.ExecuteTemplate(w, "page.html", v); err != nil {
		c.cfg.Logger.Debug("console: render the page", "err", err)
	}
}

// RenderPage writes the page for a filter and row limit as of a fresh
// sample, as "/" serves it (for benchmarks and tools).
func (c *Console) RenderPage(ctx context.Context, w interface{ Write([]byte) (int, error) }, q string, limit int) error {
	return c.page.ExecuteTemplate(w, "page.html", c.view(c.snapshot(ctx), q, cmp.Or(limit, DefaultLimit)))
}

// serveEvents streams the live section every Interval until the client
// goes away.
func (c *Console) serveEvents(w http.ResponseWriter, r *http.Request) {
	q, limit := params(r)
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	var b strings.Builder
	for {
		b.Reset()
		if err := c.page.ExecuteTemplate(&b, "live", c.view(c.snapshot(r.Context()), q, limit)); err != nil {
			c.cfg.Logger.Debug("console: render the live section", "err", err)
			return
		}
		fmt.Fprintf(w, "retry: %d\nevent: live\n", (2 * c.cfg.Interval).Milliseconds())
		for line := range strings.SplitSeq(b.String(), "\n") {
			fmt.Fprintf(w, "data: %s\n", line)
		}
		if _, err := fmt.Fprint(w, "\n"); err != nil {
			return
		}
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
		}
	}
}
