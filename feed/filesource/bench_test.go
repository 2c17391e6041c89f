package filesource_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed/filesource"
)

// BenchmarkFileSink_Append measures one durable Append (temp file, fsync,
// rename, directory fsync, under the lock).
func BenchmarkFileSink_Append(b *testing.B) {
	sink, err := filesource.NewSink(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	ctx := b.Context()
	i := 0
	for b.Loop() {
		if _, err := sink.Append(ctx, newEvent(fmt.Sprint("bench-", i))); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkFileSource_Poll measures a Poll that finds 10 new events on top of
// a history of 1k or 100k events. The cost should not depend on the history.
// The 10 files are written (and afterwards removed, and the removal absorbed
// by an unmeasured Poll) with the timer stopped, so the history stays the same
// size whatever b.N is.
func BenchmarkFileSource_Poll(b *testing.B) {
	for _, history := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("history=%dk", history/1000), func(b *testing.B) {
			dir := historyDir(b, history)
			src, err := filesource.NewSource(dir, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer src.Close()
			ctx := b.Context()
			head := uint64(history)
			if got, err := src.Poll(ctx, head-1); err != nil || len(got) != 1 { // initial scan
				b.Fatalf("initial Poll = %d events, %v", len(got), err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				for cv := head + 1; cv <= head+10; cv++ {
					writeBenchEvent(b, dir, cv)
				}
				b.StartTimer()
				got, err := src.Poll(ctx, head)
				b.StopTimer()
				if err != nil || len(got) != 10 {
					b.Fatalf("Poll = %d events, %v; want 10", len(got), err)
				}
				for cv := head + 1; cv <= head+10; cv++ {
					if err := os.Remove(filepath.Join(dir, fmt.Sprintf("%020d.json", cv))); err != nil {
						b.Fatal(err)
					}
				}
				if got, err := src.Poll(ctx, head); err != nil || len(got) != 0 {
					b.Fatalf("Poll after removal = %d events, %v; want 0", len(got), err)
				}
				b.StartTimer()
			}
		})
	}
}

var (
	historyMu   sync.Mutex
	historyDirs = map[int]string{} // history size -> directory, kept for the whole run
	historyRoot string
)

// historyDir returns a directory holding events 1..n, built once per test
// binary run (the benchmark function runs several times) and removed by
// TestMain. Each benchmark leaves it as it found it.
func historyDir(b *testing.B, n int) string {
	historyMu.Lock()
	defer historyMu.Unlock()
	if dir, ok := historyDirs[n]; ok {
		return dir
	}
	if historyRoot == "" {
		root, err := os.MkdirTemp("", "filesource-bench-")
		if err != nil {
			b.Fatal(err)
		}
		historyRoot = root
	}
	dir := filepath.Join(historyRoot, fmt.Sprint(n))
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	for cv := 1; cv <= n; cv++ {
		writeBenchEvent(b, dir, uint64(cv))
	}
	historyDirs[n] = dir
	return dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if historyRoot != "" {
		os.RemoveAll(historyRoot)
	}
	os.Exit(code)
}

// writeBenchEvent writes an event file directly, without fsync, for fast
// setup.
func writeBenchEvent(b *testing.B, dir string, cv uint64) {
	e := published(fmt.Sprint("hist-", cv), cv)
	buf, err := controlevent.Marshal(e)
	if err != nil {
		b.Fatal(err)
	}
	name := fmt.Sprintf("%020d.json", cv)
	tmp := filepath.Join(dir, ".bench-tmp")
	if err := os.WriteFile(tmp, buf, 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		b.Fatal(err)
	}
}
