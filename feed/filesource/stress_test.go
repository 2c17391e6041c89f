package filesource_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed/filesource"
)

const (
	stressEnvDir = "FILESOURCE_STRESS_CHILD_DIR"
	stressEnvID  = "FILESOURCE_STRESS_CHILD_ID"
	stressEnvN   = "FILESOURCE_STRESS_CHILD_N"

	stressWriters   = 3
	stressPerWriter = 150
	stressHistory   = 400 // events in the directory before the writers start, so a listing takes several getdents calls
)

// TestRestartStress restarts Sources over and over, each polling a few times
// from the consumer's cursor with a random batch bound, while several writer
// processes append to the directory, and checks that the consumer sees every
// event exactly once, in order, with no position skipped (the Sinks assign
// dense positions, so any gap is a missed file). Half the trials use the
// fallback that lists the directory on every Poll. The default run does a few
// trials; -tags stress, or FILESOURCE_STRESS_TRIALS=N, runs many.
func TestRestartStress(t *testing.T) {
	if dir := os.Getenv(stressEnvDir); dir != "" {
		n, _ := strconv.Atoi(os.Getenv(stressEnvN))
		stressChild(t, dir, os.Getenv(stressEnvID), n)
		return
	}
	trials := stressTrials
	if v := os.Getenv("FILESOURCE_STRESS_TRIALS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("FILESOURCE_STRESS_TRIALS=%q: want a positive number", v)
		}
		trials = n
	}
	defer filesource.SetNoSync(true)()
	restarts := 0
	for trial := range trials {
		restarts += stressTrial(t, trial)
		if t.Failed() {
			t.Fatalf("trial %d of %d failed", trial+1, trials)
		}
	}
	t.Logf("%d trials, %d Source restarts, %d events each", trials, restarts, stressHistory+stressWriters*stressPerWriter)
}

// stressTrial runs one trial and returns the number of Sources it opened.
func stressTrial(t *testing.T, trial int) int {
	dir, err := os.MkdirTemp("", "filesource-stress-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := t.Context()
	sink, err := filesource.NewSink(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range stressHistory {
		if _, err := sink.Append(ctx, newEvent(fmt.Sprint("hist-", i))); err != nil {
			t.Fatal(err)
		}
	}
	sink.Close()
	if trial%2 == 1 {
		defer filesource.SetDisableWatcher(true)()
	}

	var running atomic.Int32
	var wg sync.WaitGroup
	errs := make([]error, stressWriters)
	for w := range stressWriters {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestRestartStress$", "-test.count=1")
		cmd.Env = append(os.Environ(), stressEnvDir+"="+dir, stressEnvID+"="+strconv.Itoa(w), stressEnvN+"="+strconv.Itoa(stressPerWriter))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		running.Add(1)
		wg.Go(func() {
			defer running.Add(-1)
			if err := cmd.Wait(); err != nil {
				errs[w] = fmt.Errorf("writer %d: %w\n%s", w, err, out.String())
			}
		})
	}
	defer wg.Wait()

	total := uint64(stressHistory + stressWriters*stressPerWriter)
	rng := rand.New(rand.NewPCG(uint64(trial), 42))
	var cursor uint64
	seen := make(map[string]bool, total)
	restarts := 0
	deadline := time.Now().Add(2 * time.Minute)
	for cursor < total {
		if time.Now().After(deadline) {
			t.Errorf("trial %d: consumer stuck at %d of %d", trial, cursor, total)
			return restarts
		}
		if running.Load() == 0 {
			for _, err := range errs {
				if err != nil {
					t.Error(err)
					return restarts
				}
			}
		}
		src, err := filesource.NewSource(dir, &filesource.Options{MaxBatch: 1 + rng.IntN(200)})
		if err != nil {
			t.Fatal(err)
		}
		restarts++
		for range 1 + rng.IntN(3) {
			evs, err := src.Poll(ctx, cursor)
			if err != nil {
				src.Close()
				t.Errorf("trial %d: Poll(%d): %v", trial, cursor, err)
				return restarts
			}
			for _, e := range evs {
				if e.ControlVersion != cursor+1 {
					src.Close()
					t.Errorf("trial %d, Source %d: Poll(%d) returned %d next: events %d..%d missed (batch %v)",
						trial, restarts, cursor, e.ControlVersion, cursor+1, e.ControlVersion-1, cvList(evs))
					return restarts
				}
				if seen[e.EventID] {
					src.Close()
					t.Errorf("trial %d: event %q delivered twice", trial, e.EventID)
					return restarts
				}
				seen[e.EventID] = true
				cursor = e.ControlVersion
			}
		}
		src.Close()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if uint64(len(seen)) != total {
		t.Errorf("trial %d: %d distinct events seen, want %d", trial, len(seen), total)
	}
	return restarts
}

func stressChild(t *testing.T, dir, id string, n int) {
	defer filesource.SetNoSync(true)()
	sink, err := filesource.NewSink(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	for i := range n {
		e := controlevent.Event{EventID: fmt.Sprintf("w%s-%d", id, i), Type: "test.put", Key: "k", CreatedAt: time.Now()}
		if _, err := sink.Append(t.Context(), e); err != nil {
			t.Fatal(err)
		}
	}
}
