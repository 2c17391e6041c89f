package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed/filesource"
)

// filePollRounds is how many Polls are timed per history size.
const filePollRounds = 200

func runFile(ctx context.Context, e *env) ([]Result, error) {
	p, err := newPool(ctx, filepath.Join(e.dir, "artifacts"))
	if err != nil {
		return nil, err
	}
	var out []Result

	// Append: the Sink's durable append vs the raw file protocol.
	n := e.cfg.FileAppends
	sink, err := filesource.NewSink(filepath.Join(e.dir, "feed"), nil)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	start := time.Now()
	for i := 1; i <= n; i++ {
		if _, err := sink.Append(ctx, p.event(i, now)); err != nil {
			sink.Close()
			return nil, err
		}
	}
	rate := float64(n) / time.Since(start).Seconds()
	sink.Close()
	raw, err := rawFileAppend(filepath.Join(e.dir, "rawfeed"), p, n)
	if err != nil {
		return nil, err
	}
	out = append(out, ratioResult("file/append", "events/s", rate, raw, 0, fmt.Sprintf("%d appends vs write+fsync+rename+dir fsync", n)))

	// Poll of 10 new events with 1k vs 100k history.
	small, err := pollCost(ctx, filepath.Join(e.dir, "h1k"), p, 1_000)
	if err != nil {
		return out, err
	}
	large, err := pollCost(ctx, filepath.Join(e.dir, "hlarge"), p, e.cfg.FileHistory)
	if err != nil {
		return out, err
	}
	r := Result{Name: "file/poll", Metric: "us/poll", Value: large, Baseline: small, Ratio: large / small,
		Target: "ratio <= 2.0", Note: fmt.Sprintf("10 new events on %d-event history (value) vs 1k (baseline)", e.cfg.FileHistory)}
	r.OK = r.Ratio <= 2
	return append(out, r), nil
}

// rawFileAppend writes n event files the way a careful program would,
// without the lock or the index: temp file, fsync, rename, directory fsync.
func rawFileAppend(dir string, p *pool, n int) (float64, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	d, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	now := time.Now().UTC()
	start := time.Now()
	for i := 1; i <= n; i++ {
		ev := p.event(i, now)
		ev.ControlVersion = uint64(i)
		b, err := controlevent.Marshal(ev)
		if err != nil {
			return 0, err
		}
		tmp := filepath.Join(dir, ".tmp-raw")
		f, err := os.Create(tmp)
		if err != nil {
			return 0, err
		}
		if _, err := f.Write(b); err != nil {
			f.Close()
			return 0, err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return 0, err
		}
		f.Close()
		if err := os.Rename(tmp, filepath.Join(dir, fmt.Sprintf("%020d.json", i))); err != nil {
			return 0, err
		}
		if err := d.Sync(); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// pollCost builds a history of h events (written without fsync, for speed),
// then times filePollRounds Polls that each find 10 new events, removing
// them between rounds so the history stays h. It returns microseconds per
// Poll.
func pollCost(ctx context.Context, dir string, p *pool, h int) (float64, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	now := time.Now().UTC()
	write := func(cv int) error {
		ev := p.event(cv, now)
		ev.ControlVersion = uint64(cv)
		b, err := controlevent.Marshal(ev)
		if err != nil {
			return err
		}
		tmp := filepath.Join(dir, ".bench-tmp")
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return err
		}
		return os.Rename(tmp, filepath.Join(dir, fmt.Sprintf("%020d.json", cv)))
	}
	for cv := 1; cv <= h; cv++ {
		if err := write(cv); err != nil {
			return 0, err
		}
	}
	src, err := filesource.NewSource(dir, nil)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	head := uint64(h)
	if got, err := src.Poll(ctx, head-1); err != nil || len(got) != 1 {
		return 0, fmt.Errorf("initial poll of %d-event history: %d events, %v", h, len(got), err)
	}
	var total time.Duration
	for range filePollRounds {
		for cv := h + 1; cv <= h+10; cv++ {
			if err := write(cv); err != nil {
				return 0, err
			}
		}
		start := time.Now()
		got, err := src.Poll(ctx, head)
		total += time.Since(start)
		if err != nil || len(got) != 10 {
			return 0, fmt.Errorf("poll of %d-event history: %d events, %v; want 10", h, len(got), err)
		}
		for cv := h + 1; cv <= h+10; cv++ {
			if err := os.Remove(filepath.Join(dir, fmt.Sprintf("%020d.json", cv))); err != nil {
				return 0, err
			}
		}
		if got, err := src.Poll(ctx, head); err != nil || len(got) != 0 {
			return 0, fmt.Errorf("poll after removal: %d events, %v; want 0", len(got), err)
		}
	}
	return float64(total.Microseconds()) / filePollRounds, nil
}
