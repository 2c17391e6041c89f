package filesource_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
)

// predecessorEvent is an event as the predecessor of this package wrote it:
// its own struct with the extra fields id, tenant_id and stack_id, every
// field present (no omitempty), created_at as its producer wrote it (possibly
// empty).
type predecessorEvent struct {
	ID             string `json:"id"`
	EventID        string `json:"event_id"`
	TenantID       string `json:"tenant_id"`
	StackID        string `json:"stack_id"`
	Type           string `json:"type"`
	Key            string `json:"key"`
	Version        int64  `json:"version"`
	BaseVersion    int64  `json:"base_version"`
	ArtifactRef    string `json:"artifact_ref"`
	Checksum       string `json:"checksum"`
	ControlVersion uint64 `json:"control_version"`
	CreatedAt      string `json:"created_at"`
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

// predecessorCreatedAt are the created_at values of predecessorFeed's
// events: RFC 3339, empty, and another layout.
var predecessorCreatedAt = []string{"2026-06-08T10:00:00Z", "", "2026-06-08 10:00:02"}

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
			CreatedAt:      predecessorCreatedAt[i],
		}
		writePredecessorFile(t, dir, e)
		out = append(out, e)
	}
	return out
}

// jsonObject decodes b as a generic JSON object, for comparing two
// encodings member by member.
func jsonObject(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return m
}

// A directory written by the predecessor (one indented file per event, named
// after its event_id, with the extra fields id, tenant_id and stack_id, an
// empty and a non-RFC 3339 created_at, at positions 10, 20, 30) is read in
// full by a fresh Source from cursor 0: the known fields intact, the extra
// fields and created_at as written, and each event encoded again is the same
// JSON object as its file. A Sink continues the feed at 31.
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
				e.ControlVersion != w.ControlVersion || e.CreatedAtText() != w.CreatedAt {
				t.Errorf("event %d = %+v (created_at %q), written %+v", i, e, e.CreatedAtText(), w)
			}
			for name, val := range map[string]string{"id": w.ID, "tenant_id": w.TenantID, "stack_id": w.StackID} {
				raw, ok := e.ExtraField(name)
				var s string
				if !ok || json.Unmarshal(raw, &s) != nil || s != val {
					t.Errorf("event %d: extra field %q = %s, %v; want %q", i, name, raw, ok, val)
				}
			}
			file, err := os.ReadFile(filepath.Join(dir, w.EventID+".json"))
			if err != nil {
				t.Fatal(err)
			}
			enc, err := controlevent.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			if a, b := jsonObject(t, file), jsonObject(t, enc); !reflect.DeepEqual(a, b) {
				t.Errorf("event %d encoded again is not the object its file holds:\n file %v\n enc  %v", i, a, b)
			}
		}
		if got[0].CreatedAt.IsZero() || !got[1].CreatedAt.IsZero() {
			t.Errorf("created_at parsed as %v and %v; want the RFC 3339 one parsed, the empty one zero", got[0].CreatedAt, got[1].CreatedAt)
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

// Fields controlfeed does not know, and created_at as written, survive a
// trip through the feed: an event read from the predecessor's file and
// appended again through a Sink (a relay) is read back by another Source
// with the same extra fields and created_at, and its file holds them.
func TestInterop_UnknownFieldsRoundTrip(t *testing.T) {
	ctx := t.Context()
	from, to := t.TempDir(), t.TempDir()
	predecessorFeed(t, from)
	got, err := openSource(t, from).Poll(ctx, 0)
	if err != nil || len(got) != 3 {
		t.Fatalf("Poll(0) = %v, %v", cvList(got), err)
	}
	sink := openSink(t, to)
	var relayed []controlevent.Event
	for _, e := range got {
		e.ControlVersion = 0
		out, err := sink.Append(ctx, e)
		if err != nil {
			t.Fatalf("Append of %q: %v", e.EventID, err)
		}
		relayed = append(relayed, out)
	}
	back, err := openSource(t, to).Poll(ctx, 0)
	if err != nil || len(back) != 3 {
		t.Fatalf("Poll(0) of the relayed feed = %v, %v", cvList(back), err)
	}
	for i, e := range back {
		if e.Extra != got[i].Extra || e.Extra == "" || e.CreatedAtText() != got[i].CreatedAtText() {
			t.Errorf("event %d: extra %s, created_at %q after the trip; read %s, %q from the predecessor's file",
				i, e.Extra, e.CreatedAtText(), got[i].Extra, got[i].CreatedAtText())
		}
		if e != relayed[i] {
			t.Errorf("event %d read back as %+v, appended as %+v", i, e, relayed[i])
		}
		file, err := os.ReadFile(filepath.Join(to, fmt.Sprintf("%020d.json", e.ControlVersion)))
		if err != nil {
			t.Fatal(err)
		}
		m := jsonObject(t, file)
		for _, name := range []string{"id", "tenant_id", "stack_id"} {
			if _, ok := m[name]; !ok {
				t.Errorf("event %d: the Sink's file %s lacks %q", i, file, name)
			}
		}
	}
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
	created, err := time.Parse(time.RFC3339Nano, p.CreatedAt)
	if err != nil || p.EventID != in.EventID || p.Type != in.Type || p.Key != in.Key || p.Version != in.Version || p.BaseVersion != in.BaseVersion ||
		p.ArtifactRef != in.ArtifactRef || p.Checksum != in.Checksum || p.ControlVersion != stamped.ControlVersion ||
		!created.Equal(in.CreatedAt) {
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
