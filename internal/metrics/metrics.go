// Package metrics writes the Prometheus text exposition format (version
// 0.0.4) by hand, for the few gauges and counters controlfeed exports. It has
// no registry and no global state: a handler gathers its values and writes
// them through a Writer on every scrape.
//
// # Errors
//
// A Writer remembers the first write error and skips every later write; Err
// returns it, so a handler checks once at the end.
package metrics

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// ContentType is the Content-Type of the text exposition format.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Writer writes metric families in the text format. It is not safe for
// concurrent use; use one per scrape.
type Writer struct {
	w   io.Writer
	err error
}

// NewWriter returns a Writer writing to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Gauge writes a gauge family with one unlabelled sample.
func (w *Writer) Gauge(name, help string, v float64) { w.family(name, help, "gauge", v) }

// Counter writes a counter family with one unlabelled sample. By convention
// name ends in "_total" and v never decreases within one process.
func (w *Writer) Counter(name, help string, v float64) { w.family(name, help, "counter", v) }

// Err returns the first error writing to the underlying writer, or nil.
func (w *Writer) Err() error { return w.err }

func (w *Writer) family(name, help, typ string, v float64) {
	if w.err != nil {
		return
	}
	_, w.err = fmt.Fprintf(w.w, "# HELP %s %s\n# TYPE %s %s\n%s %s\n", name, escapeHelp(help), name, typ, name, formatValue(v))
}

// escapeHelp escapes a HELP string as the format requires: backslash and
// newline.
func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

// formatValue renders v as the format requires, including +Inf, -Inf, NaN.
func formatValue(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
