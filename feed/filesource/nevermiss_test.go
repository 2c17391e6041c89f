package filesource_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/filesource"
)

// cvList returns the ControlVersions of events.
func cvList(events []controlevent.Event) []uint64 {
	var out []uint64
	for _, e := range events {
		out = append(out, e.ControlVersion)
	}
	return out
}

// holdLock takes a flock of mode (syscall.LOCK_EX or LOCK_SH) on dir's lock
// file through a descriptor of its own, as another process would, and
// returns its release.
func holdLock(t *testing.T, dir string, mode int) (release func()) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), mode); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() { once.Do(func() { f.Close() }) }
	t.Cleanup(release)
	return release
}

// eachMode runs f with change notification and with the fallback that lists
// the directory on every call.
func eachMode(t *testing.T, f func(t *testing.T)) {
	t.Run("Watcher", f)
	t.Run("NoWatcher", func(t *testing.T) {
		defer filesource.SetDisableWatcher(true)()
		f(t)
	})
}

// Positions need not be dense: a fresh node applies a feed whose versions are
// 10, 20, 30 (the founding spec's own example) from cursor 0, and a lone
// sidecar file at 7. Only a prune marker makes a cursor behind retention.
func TestSource_Poll_SparsePositions(t *testing.T) {
	ctx := t.Context()
	eachMode(t, func(t *testing.T) {
		dir := t.TempDir()
		for _, cv := range []uint64{10, 20, 30} {
			writeEventFile(t, dir, fmt.Sprintf("evt-%d.json", cv), published(fmt.Sprint("evt-", cv), cv))
		}
		src := openSource(t, dir)
		for since, want := range map[uint64][]uint64{0: {10, 20, 30}, 5: {10, 20, 30}, 10: {20, 30}, 15: {20, 30}, 29: {30}, 30: nil} {
			got, err := src.Poll(ctx, since)
			if err != nil || !slices.Equal(cvList(got), want) {
				t.Errorf("Poll(%d) = %v, %v; want %v, nil", since, cvList(got), err, want)
			}
		}
		if out, err := openSink(t, dir).Append(ctx, newEvent("next")); err != nil || out.ControlVersion != 31 {
			t.Fatalf("Append = %d, %v; want 31 (highest + 1)", out.ControlVersion, err)
		}
		if head, err := src.Head(ctx); err != nil || head != 31 {
			t.Fatalf("Head = %d, %v; want 31", head, err)
		}

		lone := t.TempDir()
		src = openSource(t, lone)
		if got, err := src.Poll(ctx, 0); err != nil || len(got) != 0 {
			t.Fatalf("Poll(0) on an empty feed = %v, %v", got, err)
		}
		writeEventFile(t, lone, "sidecar.json", published("side-7", 7))
		for _, s := range []*filesource.Source{src, openSource(t, lone)} {
			if got, err := s.Poll(ctx, 0); err != nil || !slices.Equal(cvList(got), []uint64{7}) {
				t.Fatalf("Poll(0) with a lone file at 7 = %v, %v; want [7]", cvList(got), err)
			}
		}
	})
}

// The file feed's positions may be sparse, so its Source must not promise a
// consumer that they are dense.
func TestSource_NotGapChecker(t *testing.T) {
	var src feed.Source = openSource(t, t.TempDir())
	if _, ok := src.(feed.GapChecker); ok {
		t.Fatal("the file Source implements feed.GapChecker, but its positions may be sparse")
	}
}

// A file that appears at or below a position the Source has already
// delivered is reported, naming the file, on every Poll until it is removed:
// a consumer past that position would never apply it. A copy of a delivered
// file, or a delivered file removed and put back unchanged, is not a late
// write; nor is an event above the feed's head when the cursor is beyond it.
func TestSource_Poll_LateWrite(t *testing.T) {
	ctx := t.Context()
	eachMode(t, func(t *testing.T) {
		// The silent miss: a file at a position that never held one, below
		// what was delivered (a listing that missed it, a writer that chose
		// its position from a stale view).
		sparse := t.TempDir()
		writeEventFile(t, sparse, "10.json", published("s10", 10))
		writeEventFile(t, sparse, "20.json", published("s20", 20))
		ssrc := openSource(t, sparse)
		if got, err := ssrc.Poll(ctx, 9); err != nil || len(got) != 2 {
			t.Fatalf("Poll(9) = %v, %v", cvList(got), err)
		}
		writeEventFile(t, sparse, "15.json", published("s15", 15))
		if got, err := ssrc.Poll(ctx, 20); !errors.Is(err, filesource.ErrLateWrite) || !strings.Contains(err.Error(), "15.json") {
			t.Fatalf("Poll(20) after a file appeared at 15 = %v, %v; want ErrLateWrite naming 15.json", cvList(got), err)
		}

		dir := t.TempDir()
		sink := openSink(t, dir)
		for i := range 3 {
			if _, err := sink.Append(ctx, newEvent(fmt.Sprint("e", i+1))); err != nil {
				t.Fatal(err)
			}
		}
		src := openSource(t, dir)
		if got, err := src.Poll(ctx, 0); err != nil || len(got) != 3 {
			t.Fatalf("Poll(0) = %v, %v", cvList(got), err)
		}
		// Harmless: a copy, and a file removed and put back as it was.
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("%020d.json", 2)))
		if err != nil {
			t.Fatal(err)
		}
		writeRaw(t, dir, "copy-of-2.json", b)
		b3, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("%020d.json", 3)))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(dir, fmt.Sprintf("%020d.json", 3))); err != nil {
			t.Fatal(err)
		}
		if got, err := src.Poll(ctx, 3); err != nil || len(got) != 0 {
			t.Fatalf("Poll(3) after a copy and a removal = %v, %v", cvList(got), err)
		}
		writeRaw(t, dir, fmt.Sprintf("%020d.json", 3), b3)
		if got, err := src.Poll(ctx, 3); err != nil || len(got) != 0 {
			t.Fatalf("Poll(3) after putting a delivered file back unchanged = %v, %v", cvList(got), err)
		}

		late := published("late", 2)
		writeEventFile(t, dir, "late.json", late)
		for range 2 {
			_, err := src.Poll(ctx, 3)
			if !errors.Is(err, filesource.ErrLateWrite) || !strings.Contains(err.Error(), "late.json") {
				t.Fatalf("Poll(3) after a file appeared at 2 = %v; want ErrLateWrite naming late.json", err)
			}
		}
		// A Source started now finds the file in its first scan, below its
		// cursor: history it cannot judge.
		if got, err := openSource(t, dir).Poll(ctx, 3); err != nil || len(got) != 0 {
			t.Fatalf("fresh Poll(3) = %v, %v", cvList(got), err)
		}
		if err := os.Remove(filepath.Join(dir, "late.json")); err != nil {
			t.Fatal(err)
		}
		if got, err := src.Poll(ctx, 3); err != nil || len(got) != 0 {
			t.Fatalf("Poll(3) after removing the late file = %v, %v", cvList(got), err)
		}
		// A delivered event changed in place is late too.
		changed := published("e1", 1)
		changed.Key = "changed"
		b1, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("%020d.json", 1)))
		if err != nil {
			t.Fatal(err)
		}
		writeEventFile(t, dir, fmt.Sprintf("%020d.json", 1), changed)
		if _, err := src.Poll(ctx, 3); !errors.Is(err, filesource.ErrLateWrite) {
			t.Fatalf("Poll(3) after a delivered file changed = %v; want ErrLateWrite", err)
		}
		writeRaw(t, dir, fmt.Sprintf("%020d.json", 1), b1)
		if _, err := src.Poll(ctx, 3); err != nil {
			t.Fatalf("Poll(3) after restoring the file = %v", err)
		}

		// A restarted node polls from its cursor: files appearing below it
		// are late from the first Poll on.
		restarted := openSource(t, dir)
		if got, err := restarted.Poll(ctx, 3); err != nil || len(got) != 0 {
			t.Fatalf("Poll(3) = %v, %v", cvList(got), err)
		}
		writeEventFile(t, dir, "late-again.json", published("late-again", 2))
		if _, err := restarted.Poll(ctx, 3); !errors.Is(err, filesource.ErrLateWrite) {
			t.Fatalf("Poll(3) of a restarted Source after a file appeared at 2 = %v; want ErrLateWrite", err)
		}
		if err := os.Remove(filepath.Join(dir, "late-again.json")); err != nil {
			t.Fatal(err)
		}

		// A cursor beyond the head (tail --from) is no delivery: events
		// written above the head later are not late.
		tail := openSource(t, dir)
		if got, err := tail.Poll(ctx, 100); err != nil || len(got) != 0 {
			t.Fatalf("Poll(100) = %v, %v", cvList(got), err)
		}
		if _, err := sink.Append(ctx, newEvent("e4")); err != nil {
			t.Fatal(err)
		}
		if got, err := tail.Poll(ctx, 3); err != nil || !slices.Equal(cvList(got), []uint64{4}) {
			t.Fatalf("Poll(3) = %v, %v; want [4]", cvList(got), err)
		}
	})
}

// A file added with link(2) (maildir-style delivery: it raises only
// IN_CREATE) is seen by a running Source, and a running Sink does not choose
// its position or its name again.
func TestSource_Poll_LinkedFile(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	sink := openSink(t, dir)
	if _, err := sink.Append(ctx, newEvent("e1")); err != nil {
		t.Fatal(err)
	}
	src := openSource(t, dir)
	if got, err := src.Poll(ctx, 0); err != nil || len(got) != 1 {
		t.Fatalf("Poll(0) = %v, %v", cvList(got), err)
	}
	staged := filepath.Join(t.TempDir(), "staged")
	b, _ := controlevent.Marshal(published("linked", 2))
	if err := os.WriteFile(staged, b, 0o644); err != nil {
		t.Fatal(err)
	}
	unlock := holdLock(t, dir, syscall.LOCK_EX) // a writer following the protocol
	if err := os.Link(staged, filepath.Join(dir, fmt.Sprintf("%020d.json", 2))); err != nil {
		t.Fatal(err)
	}
	unlock()
	if got, err := src.Poll(ctx, 1); err != nil || !slices.Equal(ids(got), []string{"linked"}) {
		t.Fatalf("Poll(1) after link(2) = %q, %v; want the linked event", ids(got), err)
	}
	for i := range 2 {
		out, err := sink.Append(ctx, newEvent(fmt.Sprint("after-", i)))
		if err != nil || out.ControlVersion != uint64(3+i) {
			t.Fatalf("Append after link(2) = %d, %v; want %d", out.ControlVersion, err, 3+i)
		}
	}
}

// A Sink whose chosen file name turns out to exist (a writer that does not
// take the lock, a lost notification) rescans the directory and chooses
// again, instead of failing on every attempt.
func TestSink_Append_RescansOnUnexpectedFile(t *testing.T) {
	ctx := t.Context()
	eachMode(t, func(t *testing.T) {
		dir := t.TempDir()
		sink := openSink(t, dir)
		if _, err := sink.Append(ctx, newEvent("e1")); err != nil {
			t.Fatal(err)
		}
		intruder, _ := controlevent.Marshal(published("intruder", 2))
		fired := false
		restore := filesource.SetHookBeforeRename(func(path string) {
			if !fired {
				fired = true
				if err := os.WriteFile(path, intruder, 0o644); err != nil {
					t.Error(err)
				}
			}
		})
		out, err := sink.Append(ctx, newEvent("e2"))
		restore()
		if err != nil || out.ControlVersion != 3 {
			t.Fatalf("Append with its name taken = %d, %v; want 3 (above the intruder's 2)", out.ControlVersion, err)
		}
		got, err := openSource(t, dir).Poll(ctx, 0)
		if err != nil || !slices.Equal(ids(got), []string{"e1", "intruder", "e2"}) {
			t.Fatalf("Poll(0) = %q, %v", ids(got), err)
		}

		// A foreign file holding another position under the name the Sink
		// would choose: the Sink takes the next free name.
		writeEventFile(t, dir, fmt.Sprintf("%020d.json", 4), published("misnamed", 1))
		os.Remove(filepath.Join(dir, fmt.Sprintf("%020d.json", 1)))
		out, err = sink.Append(ctx, newEvent("e4"))
		if err != nil || out.ControlVersion != 4 {
			t.Fatalf("Append = %d, %v; want 4", out.ControlVersion, err)
		}
		if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("%020d-1.json", 4))); err != nil {
			t.Fatalf("the Sink did not write its event under the next free name: %v", err)
		}
	})
}

// A bad file fixed without a write the watcher reports as one (chmod, or a
// write through a descriptor that stays open, then chmod) is re-read:
// IN_ATTRIB is in the watch mask.
func TestSource_Poll_AttributeChange(t *testing.T) {
	ctx := t.Context()
	eachMode(t, func(t *testing.T) {
		dir := t.TempDir()
		writeEventFile(t, dir, "a.json", published("e1", 1))
		src := openSource(t, dir)
		if got, err := src.Poll(ctx, 0); err != nil || len(got) != 1 {
			t.Fatalf("Poll(0) = %v, %v", cvList(got), err)
		}
		path := filepath.Join(dir, fmt.Sprintf("%020d.json", 2))
		writeRaw(t, dir, filepath.Base(path), []byte("not yet"))
		if got, err := src.Poll(ctx, 1); err == nil {
			t.Fatalf("Poll(1) with a bad file at 2 = %v, nil", cvList(got))
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b, _ := controlevent.Marshal(published("e2", 2))
		if _, err := f.Write(b); err != nil { // IN_MODIFY only, not watched
			t.Fatal(err)
		}
		if err := os.Chmod(path, 0o600); err != nil { // IN_ATTRIB
			t.Fatal(err)
		}
		if got, err := src.Poll(ctx, 1); err != nil || !slices.Equal(ids(got), []string{"e2"}) {
			t.Fatalf("Poll(1) after the fix and a chmod = %q, %v; want e2", ids(got), err)
		}
		if os.Geteuid() == 0 {
			return // permissions do not stop root from reading
		}
		path3 := filepath.Join(dir, fmt.Sprintf("%020d.json", 3))
		b, _ = controlevent.Marshal(published("e3", 3))
		if err := os.WriteFile(path3, b, 0o000); err != nil {
			t.Fatal(err)
		}
		var ie *feed.InvalidEventError
		if _, err := src.Poll(ctx, 2); !errors.As(err, &ie) || ie.ControlVersion != 3 {
			t.Fatalf("Poll(2) with an unreadable file at 3 = %v", err)
		}
		if err := os.Chmod(path3, 0o644); err != nil {
			t.Fatal(err)
		}
		if got, err := src.Poll(ctx, 2); err != nil || !slices.Equal(ids(got), []string{"e3"}) {
			t.Fatalf("Poll(2) after chmod 644 = %q, %v; want e3", ids(got), err)
		}
	})
}

// Readers take a shared lock on ".lock" while they capture the directory's
// names, so a listing never overlaps a writer's critical section: while a
// writer holds the exclusive lock, Poll waits (until ctx is done, or
// LockTimeout with an error wrapping feed.ErrUnavailable), and once the
// writer releases it Poll sees what it wrote.
func TestSource_Poll_WaitsForWriters(t *testing.T) {
	ctx := t.Context()
	eachMode(t, func(t *testing.T) {
		dir := t.TempDir()
		writeEventFile(t, dir, "a.json", published("e1", 1))
		src := openSource(t, dir)
		quick, err := filesource.NewSource(dir, &filesource.Options{LockTimeout: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer quick.Close()

		release := holdLock(t, dir, syscall.LOCK_EX)
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		got, err := src.Poll(short, 0)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Poll while a writer holds the lock = %v, %v; want it to wait until ctx is done", cvList(got), err)
		}
		got, err = quick.Poll(ctx, 0)
		if !errors.Is(err, feed.ErrUnavailable) || !strings.Contains(err.Error(), ".lock") {
			t.Fatalf("Poll with LockTimeout 50ms while a writer holds the lock = %v, %v; want feed.ErrUnavailable naming .lock", cvList(got), err)
		}
		if _, err := quick.Head(ctx); !errors.Is(err, feed.ErrUnavailable) {
			t.Fatalf("Head while a writer holds the lock = %v", err)
		}

		// The writer's event, renamed in while it holds the lock, is seen
		// by the Poll that waited for it.
		writeEventFile(t, dir, "b.json", published("e2", 2))
		done := make(chan []controlevent.Event, 1)
		go func() {
			got, err := src.Poll(ctx, 0)
			if err != nil {
				t.Error(err)
			}
			done <- got
		}()
		time.Sleep(20 * time.Millisecond) // let it block on the lock (not needed for correctness)
		release()
		if got := <-done; !slices.Equal(ids(got), []string{"e1", "e2"}) {
			t.Fatalf("Poll that waited for the writer = %q", ids(got))
		}

		// And writers wait for readers the same way.
		sink, err := filesource.NewSink(dir, &filesource.Options{LockTimeout: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer sink.Close()
		release = holdLock(t, dir, syscall.LOCK_SH)
		in := newEvent("e3")
		if out, err := sink.Append(ctx, in); !errors.Is(err, feed.ErrUnavailable) || out != in {
			t.Fatalf("Append while a reader holds the lock = %+v, %v; want the input and feed.ErrUnavailable", out, err)
		}
		release()
		if out, err := sink.Append(ctx, in); err != nil || out.ControlVersion != 3 {
			t.Fatalf("Append = %d, %v", out.ControlVersion, err)
		}
	})
}

// Readers hold the lock only while they list names, so Sources polling in a
// tight loop (full directory scans, the longest hold) do not shut a writer
// out: every Append gets the lock within its LockTimeout.
func TestSink_Append_NotStarvedByReaders(t *testing.T) {
	defer filesource.SetDisableWatcher(true)()
	defer filesource.SetNoSync(true)()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	dir := t.TempDir()
	for cv := uint64(1); cv <= 1000; cv++ {
		writeEventFile(t, dir, fmt.Sprintf("%020d.json", cv), published(fmt.Sprint("h", cv), cv))
	}
	var wg sync.WaitGroup
	for range 4 {
		src := openSource(t, dir)
		wg.Go(func() {
			for ctx.Err() == nil {
				if _, err := src.Poll(ctx, 990); err != nil && ctx.Err() == nil {
					t.Error(err)
					return
				}
			}
		})
	}
	sink, err := filesource.NewSink(dir, &filesource.Options{LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	for i := range 20 {
		if _, err := sink.Append(ctx, newEvent(fmt.Sprint("w", i))); err != nil {
			t.Fatalf("Append %d with readers polling: %v", i, err)
		}
	}
	cancel()
	wg.Wait()
}

// A file put back at its position while the consumer still polls from below
// it (it halted at a later event: a signed feed's chain-gap, after the file
// was removed) is read in order by the running Source, as a restarted one
// would read it: the operator's "put the file back" needs no restart. Once
// the consumer has polled from at or above the position, a file appearing
// there is late.
func TestSource_Poll_PutBackBelowHaltedConsumer(t *testing.T) {
	ctx := t.Context()
	eachMode(t, func(t *testing.T) {
		dir := t.TempDir()
		sink := openSink(t, dir)
		for i := range 4 {
			if _, err := sink.Append(ctx, newEvent(fmt.Sprint("e", i+1))); err != nil {
				t.Fatal(err)
			}
		}
		name2 := filepath.Join(dir, fmt.Sprintf("%020d.json", 2))
		b2, err := os.ReadFile(name2)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(name2); err != nil { // before the consumer starts
			t.Fatal(err)
		}
		src := openSource(t, dir)
		if got, err := src.Poll(ctx, 1); err != nil || !slices.Equal(cvList(got), []uint64{3, 4}) {
			t.Fatalf("Poll(1) = %v, %v; want [3 4]", cvList(got), err)
		}
		// The consumer halted at 3 and polls from 1 again; the file is back.
		writeRaw(t, dir, fmt.Sprintf("%020d.json", 2), b2)
		for range 2 {
			if got, err := src.Poll(ctx, 1); err != nil || !slices.Equal(cvList(got), []uint64{2, 3, 4}) {
				t.Fatalf("Poll(1) after putting 2 back = %v, %v; want [2 3 4]", cvList(got), err)
			}
		}
		// Applied through 4: a file appearing below now is late, and stays
		// late whatever the consumer's later polls above it.
		if got, err := src.Poll(ctx, 4); err != nil || len(got) != 0 {
			t.Fatalf("Poll(4) = %v, %v", cvList(got), err)
		}
		writeEventFile(t, dir, "late.json", published("late", 3))
		for _, since := range []uint64{4, 3} {
			if _, err := src.Poll(ctx, since); !errors.Is(err, filesource.ErrLateWrite) || !strings.Contains(err.Error(), "late.json") {
				t.Fatalf("Poll(%d) after a file appeared at 3 = %v; want ErrLateWrite naming late.json", since, err)
			}
		}
		// A consumer moved back below it (SetCursor, a restore) reads it
		// in order: here as a conflict with the event already at 3.
		if _, err := src.Poll(ctx, 2); !errors.Is(err, filesource.ErrConflict) {
			t.Fatalf("Poll(2) with two files at 3 = %v; want ErrConflict", err)
		}
	})
}
