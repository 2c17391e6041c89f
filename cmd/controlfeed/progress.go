package main

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// progressAfter is how long a phase must run before its progress is
// printed, and the interval between lines: short work prints nothing.
const progressAfter = time.Second

// progress prints the progress of long work on stderr: one line per second
// at most, per phase, with bytes done of the total, the rate and the time
// left, and a last line when a phase that printed finishes. Its report
// method is a snapshot.ProgressFunc; safe for concurrent use.
type progress struct {
	w      io.Writer
	prefix string           // "controlfeed snapshot create"
	now    func() time.Time // time.Now; tests set a fake clock

	mu      sync.Mutex
	phase   string
	start   time.Time // of the phase
	last    time.Time // last line printed; zero = none in this phase
	printed bool
}

func newProgress(w io.Writer, cmd *command) *progress {
	return &progress{w: w, prefix: "controlfeed " + cmd.name, now: time.Now}
}

// report records done of total bytes of phase.
func (p *progress) report(phase string, done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if phase != p.phase {
		p.phase, p.start, p.last, p.printed = phase, now, time.Time{}, false
	}
	elapsed := now.Sub(p.start)
	finished := total > 0 && done >= total
	switch {
	case finished && p.printed:
		fmt.Fprintf(p.w, "%s: %s %s done in %s (%s/s)\n", p.prefix, phase, formatBytes(done),
			elapsed.Round(100*time.Millisecond), formatBytes(rate(done, elapsed)))
		p.printed = false
		p.phase = "" // a later report of the same phase starts over
		return
	case finished, elapsed < progressAfter, !p.last.IsZero() && now.Sub(p.last) < progressAfter:
		return
	}
	p.last, p.printed = now, true
	r := rate(done, elapsed)
	line := fmt.Sprintf("%s: %s %s", p.prefix, phase, formatBytes(done))
	if total > 0 {
		line += fmt.Sprintf(" of %s (%d%%)", formatBytes(total), done*100/total)
	}
	line += fmt.Sprintf(", %s/s", formatBytes(r))
	if total > 0 && r > 0 {
		eta := time.Duration(float64(total-done) / float64(r) * float64(time.Second))
		line += fmt.Sprintf(", ETA %s", eta.Round(time.Second))
	}
	fmt.Fprintln(p.w, line)
}

// rate returns bytes per second.
func rate(done int64, elapsed time.Duration) int64 {
	if elapsed <= 0 {
		return 0
	}
	return int64(float64(done) / elapsed.Seconds())
}
