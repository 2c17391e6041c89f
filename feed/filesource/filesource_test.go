package filesource_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
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

// A ".json" file that is not a valid event is never skipped. At a position
// the reader can determine (its control_version, or the number of a name like
// the Sink's), Poll returns the valid events below it first, then fails with a
// *feed.InvalidEventError for that position, naming the file, and the Sink
// appends above it. At no determinable position, every Poll fails naming the
// file and the Sink refuses to choose a position. Once the file is fixed or
// removed, both work again.
func TestSource_Poll_BadFiles(t *testing.T) {
	invalid, _ := controlevent.Marshal(newEvent("never-published")) // control_version 0
	cases := []struct {
		name    string
		file    string // "" = "dropped-<name>.json"
		content []byte
		pos     uint64 // position the bad file is reported at; 0 = none determinable
		eventID string // EventID of the InvalidEventError
		errText string // also in the error
	}{
		{name: "unparsable", content: []byte(`{"event_id": "x", `)},
		{name: "not-an-object", content: []byte(`[1,2,3]`)},
		{name: "empty", content: nil},
		{name: "never-published", content: invalid},
		{name: "control-version-is-a-string", content: []byte(`{"event_id":"a","type":"t","control_version":"3"}`)},
		{name: "control-version-above-int64", content: []byte(`{"event_id":"a","type":"t","control_version":9223372036854775808}`),
			errText: "is above 9223372036854775807"},
		{name: "trailing-data", content: []byte(`{"event_id":"a","type":"t","control_version":3} {}`), pos: 3, eventID: "a"},
		{name: "too-big", content: []byte(`{"event_id":"a","type":"t","control_version":3,"key":"` + strings.Repeat("k", controlevent.MaxEncodedSize) + `"}`),
			pos: 3, eventID: "a"},
		{name: "empty-event-id", content: []byte(`{"event_id":"","type":"t","control_version":5}`), pos: 5, eventID: feed.UnreadableEventID(5)},
		{name: "hostile-event-id", content: []byte(`{"event_id":"nul\u0000","type":"t","control_version":4,"artifact_ref":"../x"}`),
			pos: 4, eventID: feed.UnreadableEventID(4)},
		{name: "no-checksum", content: []byte(`{"event_id":"e9","type":"t","control_version":9,"artifact_ref":"sha256:ab"}`), pos: 9, eventID: "e9"},
		{name: "garbage-under-a-sink-name", file: "00000000000000000007.json", content: []byte("\x00\xff{{"), pos: 7, eventID: feed.UnreadableEventID(7)},
		{name: "truncated-after-control-version", content: []byte(`{"control_version":6,"event_id":"e6","type":"t","key":"k`), pos: 6, eventID: "e6"},
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
			bad := cmp.Or(tc.file, "dropped-"+tc.name+".json")
			writeRaw(t, dir, bad, tc.content)
			checkErr := func(err error) {
				t.Helper()
				if !strings.Contains(err.Error(), bad) {
					t.Errorf("error %q does not name %q", err, bad)
				}
				if !strings.Contains(err.Error(), tc.errText) {
					t.Errorf("error %q does not say %q", err, tc.errText)
				}
				if !errors.Is(err, controlevent.ErrInvalid) {
					t.Errorf("error %v does not wrap controlevent.ErrInvalid", err)
				}
			}
			in := newEvent("good-2")
			for _, s := range []*filesource.Source{src, openSource(t, dir)} { // incremental and fresh scan
				if tc.pos == 0 {
					got, err := s.Poll(ctx, 0)
					if err == nil {
						t.Fatalf("Poll(0) = %q, nil with a bad file of no known position in the directory", ids(got))
					}
					checkErr(err)
					var ie *feed.InvalidEventError
					if errors.As(err, &ie) {
						t.Errorf("Poll error is an InvalidEventError at %d: a position nobody can know must not be skippable", ie.ControlVersion)
					}
					continue
				}
				got, err := s.Poll(ctx, 0)
				if err != nil || !slices.Equal(ids(got), []string{"good-1"}) {
					t.Fatalf("Poll(0) = %q, %v; want the valid event below the bad file first", ids(got), err)
				}
				for range 2 { // on every call until the cursor passes it
					_, err = s.Poll(ctx, 1)
					var ie *feed.InvalidEventError
					if !errors.As(err, &ie) || !errors.Is(err, feed.ErrInvalidEvent) {
						t.Fatalf("Poll(1) = %v, want a *feed.InvalidEventError", err)
					}
					if ie.ControlVersion != tc.pos || ie.EventID != tc.eventID || ie.Source != filesource.Name {
						t.Errorf("InvalidEventError at %d, id %q, source %q; want %d, %q, file", ie.ControlVersion, ie.EventID, ie.Source, tc.pos, tc.eventID)
					}
					checkErr(err)
					if !strings.Contains(ie.Err.Error(), bad) {
						t.Errorf("InvalidEventError.Err %q does not name %q", ie.Err, bad)
					}
				}
			}
			out, err := sink.Append(ctx, in)
			if tc.pos == 0 {
				if err == nil || out != in || !strings.Contains(err.Error(), bad) {
					t.Fatalf("Append with a bad file of no known position = %+v, %v; want the input and an error naming %q", out, err, bad)
				}
			} else {
				if err != nil || out.ControlVersion != tc.pos+1 {
					t.Fatalf("Append with a bad file at %d = %d, %v; want %d: above every position taken", tc.pos, out.ControlVersion, err, tc.pos+1)
				}
				// Past the bad file (a skip), the next event is there.
				if got, err := src.Poll(ctx, tc.pos); err != nil || !slices.Equal(ids(got), []string{"good-2"}) {
					t.Fatalf("Poll(%d) past the bad file = %q, %v; want good-2", tc.pos, ids(got), err)
				}
			}
			if err := os.Remove(filepath.Join(dir, bad)); err != nil {
				t.Fatal(err)
			}
			fresh := openSource(t, dir)
			if tc.pos == 0 {
				if got, err := src.Poll(ctx, 0); err != nil || len(got) != 1 {
					t.Fatalf("Poll after removing the bad file = %d events, %v; want 1, nil", len(got), err)
				}
				if out, err := sink.Append(ctx, in); err != nil || out.ControlVersion != 2 {
					t.Fatalf("Append after removing the bad file = %d, %v; want 2, nil", out.ControlVersion, err)
				}
			}
			for _, s := range []*filesource.Source{src, fresh} {
				if got, err := s.Poll(ctx, 0); err != nil || !slices.Equal(ids(got), []string{"good-1", "good-2"}) {
					t.Fatalf("Poll(0) after removing the bad file = %q, %v", ids(got), err)
				}
			}
		})
	}
}

// Files that claim the same position are one event only if their bytes are
// equal. Different event_ids, the same event_id with different content, or a
// valid event next to an invalid file are a conflict (ErrConflict) naming the
// files, reported once the position is next, after the events below it; the
// Sink appends above it, and removing the wrong file resolves it.
func TestSource_Poll_Conflicts(t *testing.T) {
	ctx := t.Context()
	t.Run("DifferentEventIDs", func(t *testing.T) {
		dir := t.TempDir()
		writeEventFile(t, dir, "a.json", published("evt-a", 1))
		writeEventFile(t, dir, "a-copy.json", published("evt-a", 1))
		writeEventFile(t, dir, "b.json", published("evt-b", 2))
		writeEventFile(t, dir, "c.json", published("evt-c", 2))
		src := openSource(t, dir)
		if got, err := src.Poll(ctx, 0); err != nil || !slices.Equal(ids(got), []string{"evt-a"}) {
			t.Fatalf("Poll(0) = %q, %v; want evt-a (a copy in two files is one event), below the conflict", ids(got), err)
		}
		_, err := src.Poll(ctx, 1)
		if !errors.Is(err, filesource.ErrConflict) {
			t.Fatalf("Poll(1) = %v, want ErrConflict", err)
		}
		for _, name := range []string{"b.json", "c.json", "evt-b", "evt-c"} {
			if !strings.Contains(err.Error(), name) {
				t.Errorf("Poll error %q does not name %q", err, name)
			}
		}
		if out, err := openSink(t, dir).Append(ctx, newEvent("evt-d")); err != nil || out.ControlVersion != 3 {
			t.Fatalf("Append = %d, %v; want 3, nil", out.ControlVersion, err)
		}
		if err := os.Remove(filepath.Join(dir, "b.json")); err != nil {
			t.Fatal(err)
		}
		if got, err := src.Poll(ctx, 1); err != nil || !slices.Equal(ids(got), []string{"evt-c", "evt-d"}) {
			t.Fatalf("Poll(1) after removing b.json = %q, %v", ids(got), err)
		}
	})
	// The regression: a check of event ids only let each node apply
	// whichever file its index recorded first.
	t.Run("SameEventIDDifferentBytes", func(t *testing.T) {
		dir := t.TempDir()
		a, b := published("evt-x", 1), published("evt-x", 1)
		a.Key, b.Key = "from-a", "from-b"
		writeEventFile(t, dir, "a.json", a)
		writeEventFile(t, dir, "b.json", b)
		for _, s := range []*filesource.Source{openSource(t, dir), openSource(t, dir)} {
			got, err := s.Poll(ctx, 0)
			if !errors.Is(err, filesource.ErrConflict) || !strings.Contains(err.Error(), "contents differ") {
				t.Fatalf("Poll(0) = %+v, %v; want ErrConflict: the two files differ", got, err)
			}
			for _, name := range []string{"a.json", "b.json", "evt-x"} {
				if !strings.Contains(err.Error(), name) {
					t.Errorf("Poll error %q does not name %q", err, name)
				}
			}
		}
	})
	t.Run("ValidBesideInvalid", func(t *testing.T) {
		dir := t.TempDir()
		writeEventFile(t, dir, "good.json", published("evt-g", 1))
		writeRaw(t, dir, "bad.json", []byte(`{"event_id":"evt-z","control_version":1}`)) // no type
		_, err := openSource(t, dir).Poll(ctx, 0)
		var ie *feed.InvalidEventError
		if !errors.Is(err, filesource.ErrConflict) || errors.As(err, &ie) {
			t.Fatalf("Poll(0) = %v; want ErrConflict, not a skippable InvalidEventError", err)
		}
		if !strings.Contains(err.Error(), "bad.json") || !strings.Contains(err.Error(), "good.json") {
			t.Errorf("Poll error %q does not name both files", err)
		}
	})
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
// missing directory for a Source is an error naming the problem, and a
// Source never creates its directory.
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
	if _, err := filesource.NewSource(missing, nil); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Fatalf("NewSource on a missing directory: %v, want an error naming it and wrapping fs.ErrNotExist", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("NewSource created the missing directory (or a parent): %v", err)
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

// A Source on a directory it may enter but not list fails at NewSource,
// naming the directory, instead of failing every Poll. Root may list any
// directory, so the case is skipped as root (cmd/controlfeed's misuse tests
// run it as an unprivileged user).
func TestNewSource_UnlistableDirectory(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root, which lists a directory whatever its permissions")
	}
	dir := filepath.Join(t.TempDir(), "feed")
	openSink(t, dir).Close()
	if err := os.Chmod(dir, 0o311); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o755) })
	if _, err := filesource.NewSource(dir, nil); !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("NewSource on an unlistable directory: %v, want an error naming it and wrapping fs.ErrPermission", err)
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
