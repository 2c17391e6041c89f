package filesource_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/filesource"
)

// appendEvents appends n events with ids prefix0.. and returns the sink.
func appendEvents(t *testing.T, dir, prefix string, n int) *filesource.Sink {
	t.Helper()
	sink := openSink(t, dir)
	for i := range n {
		if _, err := sink.Append(t.Context(), newEvent(fmt.Sprint(prefix, i))); err != nil {
			t.Fatal(err)
		}
	}
	return sink
}

// eventFiles returns the names of the ".json" files in dir, sorted.
func eventFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range entries {
		if strings.HasSuffix(de.Name(), ".json") {
			out = append(out, de.Name())
		}
	}
	return out
}

// Prune records the retention in the marker, then deletes the files at or
// below it. A cursor below the marker is behind retention
// (*feed.CursorBehindError), for running and fresh Sources; at or above it,
// Poll is unchanged. Deleting files without a marker is no retention (sparse
// positions).
func TestPrune_Retention(t *testing.T) {
	ctx := t.Context()
	eachMode(t, func(t *testing.T) {
		dir := t.TempDir()
		appendEvents(t, dir, "e", 5)
		running := openSource(t, dir)
		if got, err := running.Poll(ctx, 0); err != nil || len(got) != 5 {
			t.Fatalf("Poll(0) = %v, %v", cvList(got), err)
		}
		var progress [][2]int
		res, err := filesource.Prune(ctx, dir, 3, &filesource.PruneOptions{Progress: func(d, n int) { progress = append(progress, [2]int{d, n}) }})
		if err != nil {
			t.Fatal(err)
		}
		if res != (filesource.PruneResult{PrunedThrough: 3, HighWater: 5, Deleted: 3}) {
			t.Fatalf("Prune = %+v", res)
		}
		if !slices.Equal(progress, [][2]int{{3, 3}}) {
			t.Errorf("progress calls %v", progress)
		}
		want := []string{fmt.Sprintf("%020d.json", 4), fmt.Sprintf("%020d.json", 5)}
		if got := eventFiles(t, dir); !slices.Equal(got, want) {
			t.Fatalf("files after Prune(3) = %q, want %q", got, want)
		}
		for _, src := range []*filesource.Source{running, openSource(t, dir)} {
			for _, since := range []uint64{0, 1, 2} {
				_, err := src.Poll(ctx, since)
				var cbe *feed.CursorBehindError
				if !errors.As(err, &cbe) || !errors.Is(err, feed.ErrCursorBehindRetention) {
					t.Fatalf("Poll(%d) below the marker = %v, want a CursorBehindError", since, err)
				}
				if cbe.Cursor != since || cbe.FirstAvailable != 4 || cbe.Source != filesource.Name {
					t.Errorf("CursorBehindError = %+v, want cursor %d, first available 4", cbe, since)
				}
			}
			if got, err := src.Poll(ctx, 3); err != nil || !slices.Equal(cvList(got), []uint64{4, 5}) {
				t.Fatalf("Poll(3) = %v, %v; want [4 5]", cvList(got), err)
			}
			if err := src.Wait(ctx, 1); err != nil {
				t.Fatalf("Wait(1) below the marker = %v; want an immediate return (Poll has an error to report)", err)
			}
		}

		// No marker, no retention: files deleted by hand leave gaps.
		other := t.TempDir()
		appendEvents(t, other, "o", 5)
		for cv := 1; cv <= 3; cv++ {
			if err := os.Remove(filepath.Join(other, fmt.Sprintf("%020d.json", cv))); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := openSource(t, other).Poll(ctx, 1); err != nil || !slices.Equal(cvList(got), []uint64{4, 5}) {
			t.Fatalf("Poll(1) with files 1..3 deleted by hand = %v, %v; want [4 5]", cvList(got), err)
		}
	})
}

// Pruning every file does not restart positions: the marker keeps the high
// water, so a Sink (running or new) assigns above it and a node at the old
// head gets the new event. (Before the marker, the Sink stamped 1 again and
// a node at cursor 3 got nothing.)
func TestPrune_Everything_PositionsContinue(t *testing.T) {
	ctx := t.Context()
	eachMode(t, func(t *testing.T) {
		dir := t.TempDir()
		sink := appendEvents(t, dir, "e", 3)
		node := openSource(t, dir)
		if got, err := node.Poll(ctx, 0); err != nil || len(got) != 3 {
			t.Fatalf("Poll(0) = %v, %v", cvList(got), err)
		}
		res, err := filesource.Prune(ctx, dir, 3, nil)
		if err != nil || res.Deleted != 3 {
			t.Fatalf("Prune(3) = %+v, %v", res, err)
		}
		if files := eventFiles(t, dir); len(files) != 0 {
			t.Fatalf("files left: %q", files)
		}
		for i, s := range []*filesource.Sink{sink, openSink(t, dir)} {
			out, err := s.Append(ctx, newEvent(fmt.Sprint("new", i)))
			if err != nil || out.ControlVersion != uint64(4+i) {
				t.Fatalf("Append after pruning everything = %d, %v; want %d", out.ControlVersion, err, 4+i)
			}
		}
		if head, err := node.Head(ctx); err != nil || head != 5 {
			t.Fatalf("Head after pruning everything = %d, %v; want 5", head, err)
		}
		if got, err := node.Poll(ctx, 3); err != nil || !slices.Equal(ids(got), []string{"new0", "new1"}) {
			t.Fatalf("Poll(3) = %q, %v; want new0 new1", ids(got), err)
		}
		// The retention never goes back, and a lower prune is a no-op
		// except for files an interrupted prune left behind.
		writeEventFile(t, dir, "left-behind.json", published("old", 2))
		res, err = filesource.Prune(ctx, dir, 1, nil)
		if err != nil || res != (filesource.PruneResult{PrunedThrough: 3, Previous: 3, HighWater: 3, Deleted: 1}) {
			t.Fatalf("Prune(1) after Prune(3) = %+v, %v", res, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "left-behind.json")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("a file below the retention survived a second Prune: %v", err)
		}
	})
}

// The marker is one small JSON object; a reader that cannot read it stops
// (it cannot tell the retention), and a Sink refuses (it cannot tell the
// high water).
func TestPrune_Marker(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	sink := appendEvents(t, dir, "e", 4)
	if _, err := filesource.Prune(ctx, dir, 2, nil); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, filesource.MarkerName))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("marker %s is not JSON: %v", b, err)
	}
	if m["format"] != 1.0 || m["pruned_through"] != 2.0 || m["high_water"] != 4.0 || m["pruned_at"] == nil {
		t.Fatalf("marker = %s", b)
	}
	src := openSource(t, dir)
	if _, err := src.Poll(ctx, 2); err != nil {
		t.Fatal(err)
	}
	for _, content := range []string{"{", `{"format":2,"pruned_through":2,"high_water":4}`, `{"format":1,"pruned_through":5,"high_water":4}`} {
		writeRaw(t, dir, filesource.MarkerName, []byte(content))
		for _, s := range []*filesource.Source{src, openSource(t, dir)} {
			if _, err := s.Poll(ctx, 2); err == nil || !strings.Contains(err.Error(), filesource.MarkerName) {
				t.Fatalf("Poll with marker %s = %v; want an error naming %s", content, err, filesource.MarkerName)
			}
		}
		in := newEvent("x")
		if out, err := sink.Append(ctx, in); err == nil || out != in {
			t.Fatalf("Append with marker %s = %+v, %v; want a refusal", content, out, err)
		}
		if _, err := filesource.Prune(ctx, dir, 3, nil); err == nil {
			t.Fatalf("Prune with marker %s succeeded", content)
		}
	}
	writeRaw(t, dir, filesource.MarkerName, b)
	if got, err := src.Poll(ctx, 2); err != nil || len(got) != 2 {
		t.Fatalf("Poll(2) with the marker restored = %v, %v", cvList(got), err)
	}
}

// Prune refuses, changing nothing, what it cannot do safely or what makes
// no sense, with an error naming the directory and the reason.
func TestPrune_Errors(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	appendEvents(t, dir, "e", 3)
	plain := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing")
	cases := []struct {
		name    string
		dir     string
		through uint64
		want    string
	}{
		{"EmptyDir", "", 1, "FileDir"},
		{"Missing", missing, 1, "no such file or directory"},
		{"NotADirectory", plain, 1, "not a directory"},
		{"Zero", dir, 0, "positions start at 1"},
		{"AboveHead", dir, 4, "highest position taken in the directory is 3"},
		{"AboveInt64", dir, 1 << 63, "highest usable position"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := filesource.Prune(ctx, tc.dir, tc.through, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "filesource: prune") {
				t.Fatalf("Prune(%q, %d) = %v; want an error saying %q", tc.dir, tc.through, err, tc.want)
			}
		})
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Prune created the missing directory")
	}
	writeRaw(t, dir, "mystery.json", []byte("garbage"))
	if _, err := filesource.Prune(ctx, dir, 2, nil); err == nil || !strings.Contains(err.Error(), "mystery.json") {
		t.Fatalf("Prune with a file of unknown position = %v; want an error naming it", err)
	}
	if got := eventFiles(t, dir); len(got) != 4 {
		t.Fatalf("a refused Prune deleted files: %q left", got)
	}
	if _, err := os.Stat(filepath.Join(dir, filesource.MarkerName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused Prune wrote a marker")
	}
	if _, err := filesource.Prune(ctx, dir, 2, &filesource.PruneOptions{LockTimeout: -1}); err == nil {
		t.Fatal("Prune accepted a negative LockTimeout")
	}
}
