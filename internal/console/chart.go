package console

import (
	"cmp"
	"fmt"
	"html/template"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/controlfeed/controlfeed/fleet"
)

// Chart geometry, in SVG user units.
const (
	chartW, chartH = 600.0, 160.0
	chartPad       = 4.0
)

// chart is the lag chart: one polyline per node among the most lagging
// over the window.
type chart struct {
	Lines   []chartLine
	Max     uint64
	Window  time.Duration
	Samples int
}

type chartLine struct {
	Node   string
	Points string
	Color  string
	Last   uint64
}

var palette = []string{"#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"}

// drawChart draws the lag of the nodes that were the most behind at any
// sample of ring within window before now. A node absent from a sample was
// at the head (lag 0) then.
func drawChart(ring []sample, now time.Time, window time.Duration) chart {
	c := chart{Window: window, Samples: len(ring)}
	peak := map[string]uint64{}
	for _, s := range ring {
		for n, l := range s.lags {
			peak[n] = max(peak[n], l)
			c.Max = max(c.Max, l)
		}
	}
	nodes := make([]string, 0, len(peak))
	for n := range peak {
		nodes = append(nodes, n)
	}
	slices.SortFunc(nodes, func(a, b string) int { return cmp.Or(cmp.Compare(peak[b], peak[a]), cmp.Compare(a, b)) })
	nodes = nodes[:min(len(nodes), chartNodes)]
	slices.Sort(nodes)
	if c.Max == 0 {
		return c
	}
	// The x axis spans the samples held (at least 30 s), up to window.
	span := window
	if len(ring) > 0 {
		span = min(window, max(30*time.Second, now.Sub(ring[0].At)))
	}
	c.Window = span
	x := func(t time.Time) float64 {
		f := 1 - now.Sub(t).Seconds()/span.Seconds()
		return chartPad + math.Max(0, f)*(chartW-2*chartPad)
	}
	y := func(l uint64) float64 {
		return chartH - chartPad - float64(l)/float64(c.Max)*(chartH-2*chartPad)
	}
	for i, n := range nodes {
		var b strings.Builder
		var last uint64
		for _, s := range ring {
			last = s.lags[n]
			fmt.Fprintf(&b, "%.1f,%.1f ", x(s.At), y(last))
		}
		c.Lines = append(c.Lines, chartLine{Node: n, Points: strings.TrimSpace(b.String()), Color: palette[i%len(palette)], Last: last})
	}
	return c
}

var funcs = template.FuncMap{
	"problem": problem,
	"rowClass": func(r fleet.Row) string {
		switch {
		case r.Halted != nil && r.Halted.Security != "":
			return "bad security"
		case r.Digest.Status == fleet.AgreementDiffers:
			return "bad diverged"
		case r.State == fleet.StateHalted:
			return "bad halted"
		case r.State == fleet.StateUnavailable:
			return "bad unavailable"
		case r.State == fleet.StateStale:
			return "bad stale"
		case r.State == fleet.StateLagging:
			return "warn"
		}
		return ""
	},
	"secs": func(f *float64) string {
		if f == nil {
			return "?"
		}
		return fmtSecs(*f)
	},
	"age":  func(f float64) string { return fmtSecs(f) },
	"when": func(t time.Time) string { return t.UTC().Format("15:04:05") },
	"dur":  func(d time.Duration) string { return d.String() },
	"rate": func(f *float64) string {
		if f == nil {
			return "?"
		}
		return fmt.Sprintf("%.1f/s", *f)
	},
	"short": func(s string, n int) string {
		if len(s) <= n {
			return s
		}
		return s[:n] + "…"
	},
	"ms":     func(d time.Duration) int64 { return d.Milliseconds() },
	"chartW": func() float64 { return chartW },
	"chartH": func() float64 { return chartH },
}

func fmtSecs(f float64) string {
	switch {
	case f < 10:
		return fmt.Sprintf("%.1fs", f)
	case f < 120:
		return fmt.Sprintf("%.0fs", f)
	case f < 7200:
		return fmt.Sprintf("%.0fm", f/60)
	}
	return fmt.Sprintf("%.1fh", f/3600)
}
