package filesource_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
)

// predecessorEvent is an event as the predecessor of this package wrote it:
// its own struct with the extra fields id, tenant_id and stack_id, every
// field present (no omitempty).
type predecessorEvent struct {
	ID             string    `json:"id"`
	EventID        string    `json:"event_id"`
	TenantID       string    `json:"tenant_id"`
	StackID        string    `json:"stack_id"`
	Type           string    `json:"type"`
	Key            string    `json:"key"`
	Version        int64     `json:"version"`
	BaseVersion    int64     `json:"base_version"`
	ArtifactRef    string    `json:"artifact_ref"`
	Checksum       string    `json:"checksum"`
	ControlVersion uint64    `json:"control_version"`
	CreatedAt      time.Time `json:"created_at"`
}

// writePredecessorFile writes e as the predecessor did: json.MarshalIndent,
// in a file named "<event_id>.json".
func writePredecessorFile(t *testing.T, dir string, e predecessorEvent) {
	t.Helper()
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	writeRaw(t, dir, e.EventID+".json", b)
}

func predecessorFeed(t *testing.T, dir string) []predecessorEvent {
	t.Helper()
	sum := controlevent.Checksum([]byte("payload"))
	var out []predecessorEvent
	for i, cv := range []uint64{10, 20, 30} {
		e := predecessorEvent{
			ID:             fmt.Sprintf("row-%d", i+1),
			EventID:        fmt.Sprintf("0190f5a2-6c1e-7b3a-9a51-2f7d4c8e9b1%d", i),
			TenantID:       "tenant-acme",
			StackID:        "stack-eu-1",
			Type:           "tenant.updated",
			Key:            "tenants/acme",
			Version:        int64(i + 2),
			BaseVersion:    int64(i + 1),
			ArtifactRef:    sum,
			Checksum:       sum,
			ControlVersion: cv,
			CreatedAt:      time.Date(2026, 6, 8, 10, 0, i, 0, time.UTC),
		}
		writePredecessorFile(t, dir, e)
		out = append(out, e)
	}
	return out
}

// A directory written by the predecessor (one indented file per event, named
// after its event_id, with extra fields, at positions 10, 20, 30) is read in
// full by a fresh Source from cursor 0, the known fields intact, and a Sink
// continues it at 31.
func TestInterop_PredecessorFiles(t *testing.T) {
	ctx := t.Context()
	eachMode(t, func(t *testing.T) {
		dir := t.TempDir()
		want := predecessorFeed(t, dir)
		src := openSource(t, dir)
		got, err := src.Poll(ctx, 0)
		if err != nil {
			t.Fatalf("Poll(0) of the predecessor's feed: %v", err)
		}
		if len(got) != len(want) {
			t.Fatalf("Poll(0) = %v, want positions 10 20 30", cvList(got))
		}
		for i, e := range got {
			w := want[i]
			if e.EventID != w.EventID || e.Type != w.Type || e.Key != w.Key || e.Version != w.Version ||
				e.BaseVersion != w.BaseVersion || e.ArtifactRef != w.ArtifactRef || e.Checksum != w.Checksum ||
				e.ControlVersion != w.ControlVersion || !e.CreatedAt.Equal(w.CreatedAt) {
				t.Errorf("event %d = %+v, written %+v", i, e, w)
			}
		}
		out, err := openSink(t, dir).Append(ctx, newEvent("after-the-predecessor"))
		if err != nil || out.ControlVersion != 31 {
			t.Fatalf("Append = %d, %v; want 31", out.ControlVersion, err)
		}
		// Idempotence covers the predecessor's events too.
		again := newEvent(want[1].EventID)
		if out, err := openSink(t, dir).Append(ctx, again); err != nil || out.ControlVersion != 20 {
			t.Fatalf("Append of a predecessor's EventID = %d, %v; want 20", out.ControlVersion, err)
		}
		if got, err := src.Poll(ctx, 30); err != nil || !slices.Equal(ids(got), []string{"after-the-predecessor"}) {
			t.Fatalf("Poll(30) = %q, %v", ids(got), err)
		}
	})
}

// The reverse: every file the Sink writes is one JSON object, nothing else
// but a final newline, that a plain encoding/json reader tolerant of unknown
// fields (the predecessor's struct) decodes into the same event.
func TestInterop_PlainJSONReader(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	sink := openSink(t, dir)
	sum := controlevent.Checksum([]byte("p"))
	in := controlevent.Event{EventID: "evt-plain", Type: "kv.put", Key: "k/é\"\\", Version: 7, BaseVersion: 6,
		ArtifactRef: sum, Checksum: sum, CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)}
	stamped, err := sink.Append(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	files := eventFiles(t, dir)
	if len(files) != 1 || files[0] != fmt.Sprintf("%020d.json", stamped.ControlVersion) {
		t.Fatalf("files = %q", files)
	}
	b, err := os.ReadFile(filepath.Join(dir, files[0]))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(b, []byte("}\n")) || bytes.Count(b, []byte("\n")) != 1 {
		t.Fatalf("file is not one JSON object and a newline: %q", b)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var p predecessorEvent
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("encoding/json cannot read %s: %v", b, err)
	}
	if dec.More() {
		t.Fatalf("more than one JSON value in %q", b)
	}
	if p.EventID != in.EventID || p.Type != in.Type || p.Key != in.Key || p.Version != in.Version || p.BaseVersion != in.BaseVersion ||
		p.ArtifactRef != in.ArtifactRef || p.Checksum != in.Checksum || p.ControlVersion != stamped.ControlVersion ||
		!p.CreatedAt.Equal(in.CreatedAt) {
		t.Fatalf("encoding/json read %+v from %s, want %+v", p, b, stamped)
	}
	var generic map[string]any
	if err := json.Unmarshal(b, &generic); err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"event_id", "type", "control_version", "created_at"} {
		if _, ok := generic[field]; !ok {
			t.Errorf("field %q missing from %s", field, b)
		}
	}
	if strings.Contains(string(b), "ControlVersion") {
		t.Errorf("Go field names leaked into %s", b)
	}
}
