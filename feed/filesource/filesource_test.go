package filesource_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/filesource"
)

func newEvent(id string) controlevent.Event {
	return controlevent.Event{
		EventID:   id,
		Type:      "test.put",
		Key:       "k/" + id,
		CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

func openSink(t *testing.T, dir string) *filesource.Sink {
	t.Helper()
	s, err := filesource.NewSink(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openSource(t *testing.T, dir string) *filesource.Source {
	t.Helper()
	s, err := filesource.NewSource(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// writeEventFile writes a published event the way a well-behaved sidecar
// does: temp file, then rename to name.
func writeEventFile(t *testing.T, dir, name string, e controlevent.Event) {
	t.Helper()
	b, err := controlevent.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	writeRaw(t, dir, name, b)
}

func writeRaw(t *testing.T, dir, name string, b []byte) {
	t.Helper()
	tmp := filepath.Join(dir, ".sidecar-tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func published(id string, cv uint64) controlevent.Event {
	e := newEvent(id)
	e.ControlVersion = cv
	return e
}

func ids(events []controlevent.Event) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.EventID)
	}
	return out
}

// listTree returns every path under root, relative to it.
func listTree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The Sink never writes outside its directory, whatever the EventID: file
// names come from the ControlVersion only. Hostile IDs that are valid event
// ids are stored (and round-trip); invalid ones are rejected with the input
// returned unchanged.
func TestSink_Append_HostileEventIDs(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "feed")
	sink := openSink(t, dir)
	ctx := t.Context()
	accepted := []string{
		"../x", "../../../../../../tmp/x", "/abs/path", "/", ".", "..", "a/b/c", `..\..\x`,
		"x.json", ".lock", ".tmp-1", "00000000000000000001.json", "~", "$HOME", "*", "evt 42",
		strings.Repeat("a", controlevent.MaxEventIDLen),
	}
	rejected := []string{
		"nul\x00byte", "new\nline", strings.Repeat("b", controlevent.MaxEventIDLen+1), strings.Repeat("../", 1000), "bad\xffutf8",
	}
	for i, id := range accepted {
		out, err := sink.Append(ctx, newEvent(id))
		if err != nil {
			t.Fatalf("Append(%q): %v", id, err)
		}
		if out.ControlVersion != uint64(i+1) {
			t.Fatalf("Append(%q) = cv %d, want %d", id, out.ControlVersion, i+1)
		}
	}
	for _, id := range rejected {
		in := newEvent(id)
		out, err := sink.Append(ctx, in)
		if err == nil {
			t.Fatalf("Append(%q) accepted an invalid EventID (cv %d)", id, out.ControlVersion)
		}
		if !errors.Is(err, controlevent.ErrInvalid) {
			t.Errorf("Append(%q): error %v does not wrap controlevent.ErrInvalid", id, err)
		}
		if out != in {
			t.Errorf("Append(%q) returned %+v on error, want the input", id, out)
		}
	}
	want := []string{".", "feed", filepath.Join("feed", ".lock")}
	for i := range accepted {
		want = append(want, filepath.Join("feed", fmt.Sprintf("%020d.json", i+1)))
	}
	slices.Sort(want)
	if got := listTree(t, root); !slices.Equal(got, want) {
		t.Fatalf("files under the test root:\n got  %q\n want %q", got, want)
	}
	got, err := openSource(t, dir).Poll(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids(got), accepted) {
		t.Fatalf("Poll ids = %q, want %q", ids(got), accepted)
	}
}

// A ".json" file that is not a valid event fails Poll with an error naming
// the file, never skipped; once fixed or removed, Poll works again. The Sink
// refuses to choose a ControlVersion meanwhile.
func TestSource_Poll_BadFiles(t *testing.T) {
	invalid, _ := controlevent.Marshal(newEvent("never-published")) // control_version 0
	cases := []struct {
		name    string
		content []byte
		errIs   error
	}{
		{"unparsable", []byte(`{"event_id": "x", `), controlevent.ErrInvalid},
		{"not-an-object", []byte(`[1,2,3]`), controlevent.ErrInvalid},
		{"trailing-data", []byte(`{"event_id":"a","type":"t","control_version":3} {}`), controlevent.ErrInvalid},
		{"empty", nil, controlevent.ErrInvalid},
		{"invalid-event", invalid, controlevent.ErrInvalid},
		{"too-big", []byte(`{"event_id":"a","type":"t","control_version":3,"key":"` + strings.Repeat("k", controlevent.MaxEncodedSize) + `"}`), controlevent.ErrInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ctx := t.Context()
			sink := openSink(t, dir)
			src := openSource(t, dir)
			if _, err := sink.Append(ctx, newEvent("good-1")); err != nil {
				t.Fatal(err)
			}
			if _, err := src.Poll(ctx, 0); err != nil { // index is warm: the bad file arrives as a change
				t.Fatal(err)
			}
			bad := "dropped-" + tc.name + ".json"
			writeRaw(t, dir, bad, tc.content)
			for _, s := range []*filesource.Source{src, openSource(t, dir)} { // incremental and fresh scan
				_, err := s.Poll(ctx, 0)
				if err == nil {
					t.Fatal("Poll succeeded with a bad file in the directory")
				}
				if !strings.Contains(err.Error(), bad) {
					t.Errorf("Poll error %q does not name %q", err, bad)
				}
				if !errors.Is(err, tc.errIs) {
					t.Errorf("Poll error %v does not wrap %v", err, tc.errIs)
				}
			}
			in := newEvent("good-2")
			if out, err := sink.Append(ctx, in); err == nil || out != in || !strings.Contains(err.Error(), bad) {
				t.Errorf("Append with a bad file present = %+v, %v; want the input and an error naming %q", out, err, bad)
			}
			if err := os.Remove(filepath.Join(dir, bad)); err != nil {
				t.Fatal(err)
			}
			got, err := src.Poll(ctx, 0)
			if err != nil || len(got) != 1 {
				t.Fatalf("Poll after removing the bad file = %d events, %v; want 1, nil", len(got), err)
			}
			if out, err := sink.Append(ctx, in); err != nil || out.ControlVersion != 2 {
				t.Fatalf("Append after removing the bad file = %d, %v; want 2, nil", out.ControlVersion, err)
			}
		})
	}
}

// Two files with the same ControlVersion and different EventIDs fail Poll
// naming both; the same event in two files is one event.
func TestSource_Poll_DuplicateControlVersion(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	src := openSource(t, dir)
	writeEventFile(t, dir, "a.json", published("evt-a", 1))
	writeEventFile(t, dir, "a-copy.json", published("evt-a", 1))
	writeEventFile(t, dir, "b.json", published("evt-b", 2))
	got, err := src.Poll(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"evt-a", "evt-b"}; !slices.Equal(ids(got), want) {
		t.Fatalf("Poll = %q, want %q (same event in two files is one)", ids(got), want)
	}
	writeEventFile(t, dir, "c.json", published("evt-c", 2))
	for _, s := range []*filesource.Source{src, openSource(t, dir)} {
		_, err := s.Poll(ctx, 0)
		if err == nil {
			t.Fatal("Poll succeeded with two events at control_version 2")
		}
		for _, name := range []string{"b.json", "c.json", "evt-b", "evt-c"} {
			if !strings.Contains(err.Error(), name) {
				t.Errorf("Poll error %q does not name %q", err, name)
			}
		}
	}
	// A sink still appends above the conflict (its max is known) ...
	if out, err := openSink(t, dir).Append(ctx, newEvent("evt-d")); err != nil || out.ControlVersion != 3 {
		t.Fatalf("Append = %d, %v; want 3, nil", out.ControlVersion, err)
	}
	// ... and removing one of the two resolves it.
	if err := os.Remove(filepath.Join(dir, "b.json")); err != nil {
		t.Fatal(err)
	}
	got, err = src.Poll(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"evt-a", "evt-c", "evt-d"}; !slices.Equal(ids(got), want) {
		t.Fatalf("Poll = %q, want %q", ids(got), want)
	}
}

// A file dropped by another program is read whatever its name, as long as it
// ends in ".json"; other names are ignored. The Sink counts sidecar events
// when choosing the next ControlVersion and dedupes against their EventIDs.
func TestSource_SidecarFiles(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	src := openSource(t, dir)
	sink := openSink(t, dir)
	if _, err := src.Poll(ctx, 0); err != nil {
		t.Fatal(err)
	}
	writeEventFile(t, dir, "zz sidecar ünïcode.json", published("side-1", 1))
	// Written in place (no rename): visible once closed.
	b, _ := controlevent.Marshal(published("side-2", 2))
	if err := os.WriteFile(filepath.Join(dir, "0002.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"notes.txt", "x.json.tmp", "README"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("not an event"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "subdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := src.Poll(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"side-1", "side-2"}; !slices.Equal(ids(got), want) {
		t.Fatalf("Poll = %q, want %q", ids(got), want)
	}
	out, err := sink.Append(ctx, newEvent("mine"))
	if err != nil || out.ControlVersion != 3 {
		t.Fatalf("Append after sidecar events = %d, %v; want 3, nil", out.ControlVersion, err)
	}
	out, err = sink.Append(ctx, newEvent("side-2"))
	if err != nil || out.ControlVersion != 2 {
		t.Fatalf("Append of an EventID a sidecar wrote = %d, %v; want 2, nil", out.ControlVersion, err)
	}
	head, err := src.Head(ctx)
	if err != nil || head != 3 {
		t.Fatalf("Head = %d, %v; want 3, nil", head, err)
	}
}

// Pruning the oldest files is retention: a cursor older than what is left is
// reported as feed.ErrCursorBehindRetention, not skipped.
func TestSource_Poll_CursorBehindRetention(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	sink := openSink(t, dir)
	for i := range 5 {
		if _, err := sink.Append(ctx, newEvent(fmt.Sprint("e", i))); err != nil {
			t.Fatal(err)
		}
	}
	src := openSource(t, dir)
	for cv := 1; cv <= 3; cv++ {
		if err := os.Remove(filepath.Join(dir, fmt.Sprintf("%020d.json", cv))); err != nil {
			t.Fatal(err)
		}
	}
	_, err := src.Poll(ctx, 1)
	var cbe *feed.CursorBehindError
	if !errors.Is(err, feed.ErrCursorBehindRetention) || !errors.As(err, &cbe) {
		t.Fatalf("Poll(1) with files 1..3 pruned: %v, want a CursorBehindError", err)
	}
	if cbe.Cursor != 1 || cbe.FirstAvailable != 4 {
		t.Fatalf("CursorBehindError = %+v, want Cursor 1, FirstAvailable 4", cbe)
	}
	got, err := src.Poll(ctx, 3)
	if err != nil || len(got) != 2 {
		t.Fatalf("Poll(3) = %d events, %v; want 2, nil", len(got), err)
	}
}

// A Sink removes temporary files left by a crashed writer when it opens, and
// readers never treat them as events.
func TestSink_RemovesStaleTemps(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, ".tmp-123456")
	if err := os.WriteFile(stale, []byte(`{"half":`), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := openSource(t, dir).Poll(t.Context(), 0); err != nil || len(got) != 0 {
		t.Fatalf("Poll with a temp file = %v, %v; want nothing", got, err)
	}
	openSink(t, dir)
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale temp file still there after NewSink: %v", err)
	}
}

// The registry opens the backend by name on FileDir; an empty FileDir or a
// missing directory for a Source is an error naming the problem.
func TestRegistry(t *testing.T) {
	dir := t.TempDir()
	sink, err := feed.OpenSink(filesource.Name, feed.SourceConfig{FileDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.(*filesource.Sink).Close()
	src, err := feed.Open(filesource.Name, feed.SourceConfig{FileDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer src.(*filesource.Source).Close()
	if src.Name() != "file" || sink.Name() != "file" {
		t.Fatalf("names %q, %q", src.Name(), sink.Name())
	}
	if _, err := feed.Open(filesource.Name, feed.SourceConfig{}); err == nil || !strings.Contains(err.Error(), "FileDir") {
		t.Fatalf("Open with empty FileDir: %v", err)
	}
	missing := filepath.Join(dir, "missing", "feed")
	ms, err := filesource.NewSource(missing, nil)
	if err != nil {
		t.Fatalf("NewSource on a missing directory: %v", err)
	}
	ms.Close()
	if fi, err := os.Stat(missing); err != nil || !fi.IsDir() {
		t.Fatalf("NewSource did not create %s: %v", missing, err)
	}
	notDir := filepath.Join(dir, "plain")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := filesource.NewSource(notDir, nil); err == nil || !strings.Contains(err.Error(), notDir) {
		t.Fatalf("NewSource on a plain file: %v", err)
	}
	if _, err := filesource.NewSource(dir, &filesource.Options{MaxBatch: -1}); err == nil {
		t.Fatal("NewSource accepted MaxBatch -1")
	}
}

// A Source whose directory is removed fails Poll instead of reporting an
// empty feed forever.
func TestSource_Poll_DirectoryRemoved(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "feed")
	sink := openSink(t, dir)
	if _, err := sink.Append(t.Context(), newEvent("e1")); err != nil {
		t.Fatal(err)
	}
	src := openSource(t, dir)
	if _, err := src.Poll(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	sink.Close()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if got, err := src.Poll(t.Context(), 0); err == nil {
		t.Fatalf("Poll after the directory was removed = %d events, nil error", len(got))
	}
}

// Close wakes a blocked Wait, which then reports feed.ErrClosed.
func TestSource_Wait_Close(t *testing.T) {
	src := openSource(t, t.TempDir())
	done := make(chan error, 1)
	go func() { done <- src.Wait(context.Background(), 0) }()
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, feed.ErrClosed) {
		t.Fatalf("Wait after Close = %v, want feed.ErrClosed", err)
	}
}
