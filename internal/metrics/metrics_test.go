package metrics

import (
	"bytes"
	"errors"
	"math"
	"testing"
)

func TestWriter_Values(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want string
	}{
		{0, "0"}, {1.5, "1.5"}, {1e21, "1e+21"}, {18446744073709551615, "1.8446744073709552e+19"},
		{math.Inf(1), "+Inf"}, {math.Inf(-1), "-Inf"}, {math.NaN(), "NaN"},
	} {
		var b bytes.Buffer
		w := NewWriter(&b)
		w.Gauge("g", "h", tc.v)
		want := "# HELP g h\n# TYPE g gauge\ng " + tc.want + "\n"
		if b.String() != want {
			t.Errorf("Gauge(%v) wrote %q, want %q", tc.v, b.String(), want)
		}
	}
}

func TestWriter_EscapesHelp(t *testing.T) {
	var b bytes.Buffer
	NewWriter(&b).Counter("c_total", "a\\b\nc", 1)
	want := "# HELP c_total a\\\\b\\nc\n# TYPE c_total counter\nc_total 1\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	f.n++
	return 0, errors.New("disk full")
}

func TestWriter_StopsAfterError(t *testing.T) {
	f := &failWriter{}
	w := NewWriter(f)
	w.Gauge("a", "a", 1)
	w.Gauge("b", "b", 2)
	if w.Err() == nil {
		t.Fatal("Err() = nil after a failed write")
	}
	if f.n != 1 {
		t.Errorf("underlying writer called %d times, want 1", f.n)
	}
}
