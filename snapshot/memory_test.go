package snapshot_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/snapshot"
)

// buildLargeNode writes a node database of about mib MiB: kv rows of 64 KiB
// random values, one applied event each, the cursor at the last.
func buildLargeNode(t testing.TB, path string, mib int) *sql.DB {
	t.Helper()
	db := openNode(t, path)
	rows := mib * 16
	for done := 0; done < rows; {
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 64 && done < rows; i, done = i+1, done+1 {
			if _, err := tx.Exec(`INSERT INTO controlfeed_kv (key, value, version, updated_at) VALUES (?, randomblob(65536), 1, '')`, fmt.Sprintf("k%06d", done)); err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(`INSERT INTO controlfeed_applied_events (event_id, control_version, type, applied_at, outcome) VALUES (?, ?, 'kv.put', '', 'applied')`, fmt.Sprintf("e%06d", done), done+1); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := tx.Exec(`UPDATE controlfeed_cursor SET control_version = ?`, done); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

// heapPeak samples the Go heap in use until stop is called and returns the
// peak above the level at the start.
func heapPeak() (stop func() uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > base && ms.HeapInuse-base > peak.Load() {
				peak.Store(ms.HeapInuse - base)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 { close(done); wg.Wait(); return peak.Load() }
}

// peakRSS returns the process's peak resident set (VmHWM) in bytes, and
// resetPeakRSS resets it (Linux only; 0 elsewhere).
func peakRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n << 10
		}
	}
	return 0
}

func resetPeakRSS() { os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

func createRestore(t testing.TB, db *sql.DB, store artifact.Store, dir string) snapshot.Manifest {
	ctx := context.Background()
	m, err := snapshot.Create(ctx, db, store, &snapshot.CreateOptions{TempDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "restored.db")
	os.Remove(target)
	if err := snapshot.Restore(ctx, store, m, target, nil); err != nil {
		t.Fatal(err)
	}
	return m
}

// Create and Restore of a database several times larger than the bound
// keep the Go heap bounded: nothing holds the database in memory.
func TestCreateRestore_BoundedHeap(t *testing.T) {
	mib, bound := 16, uint64(8<<20)
	if raceEnabled {
		mib = 6 // still a copy larger than the streaming buffers' bound
	}
	dir := t.TempDir()
	db := buildLargeNode(t, filepath.Join(dir, "large.db"), mib)
	store := newStore(t)
	stop := heapPeak()
	m := createRestore(t, db, store, t.TempDir())
	peak := stop()
	t.Logf("database %d MiB: Go heap peak %.1f MiB above the start", m.Database.Size>>20, float64(peak)/(1<<20))
	if m.Database.Size < int64(mib)<<20 {
		t.Fatalf("database only %d bytes", m.Database.Size)
	}
	if peak > bound {
		t.Fatalf("Go heap grew by %d bytes during Create+Restore of a %d-byte database; want under %d (is something reading it whole?)", peak, m.Database.Size, bound)
	}
}

// BenchmarkCreateRestore snapshots and restores a ~100 MiB node database
// (SNAPSHOT_BENCH_MIB overrides the size) and reports the Go heap's peak
// above its starting level and the process's peak RSS during the loop.
func BenchmarkCreateRestore(b *testing.B) {
	mib := 100
	if s := os.Getenv("SNAPSHOT_BENCH_MIB"); s != "" {
		mib, _ = strconv.Atoi(s)
	}
	dir := b.TempDir()
	db := buildLargeNode(b, filepath.Join(dir, "large.db"), mib)
	store := newStore(b)
	work := b.TempDir()
	b.ReportAllocs()
	resetPeakRSS()
	stop := heapPeak()
	var size int64
	for b.Loop() {
		size = createRestore(b, db, store, work).Database.Size
	}
	peak := stop()
	b.SetBytes(size)
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
	if rss := peakRSS(); rss > 0 {
		b.ReportMetric(float64(rss)/(1<<20), "peak-rss-MiB")
	}
}
