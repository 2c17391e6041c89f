package controlevent_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// predecessorEvent is the event as the system controlfeed replaces wrote
// it: its own "id", "tenant_id" and "stack_id" beside the fields controlfeed
// knows, created_at a plain string (often empty), one file per event written
// with json.MarshalIndent.
type predecessorEvent struct {
	ID             int64  `json:"id"`
	EventID        string `json:"event_id"`
	TenantID       string `json:"tenant_id"`
	StackID        string `json:"stack_id"`
	Type           string `json:"type"`
	Key            string `json:"key,omitempty"`
	Version        int64  `json:"version,omitempty"`
	BaseVersion    int64  `json:"base_version,omitempty"`
	ArtifactRef    string `json:"artifact_ref,omitempty"`
	Checksum       string `json:"checksum,omitempty"`
	ControlVersion uint64 `json:"control_version"`
	CreatedAt      string `json:"created_at"`
}

func predecessorFeed() []predecessorEvent {
	return []predecessorEvent{
		{ID: 1, EventID: "0190f7d2-0000-7000-8000-00000000000a", TenantID: "acme", StackID: "stk-eu-1", Type: "kv.put",
			Key: "tenants/acme", Version: 1, ArtifactRef: goodSum, Checksum: goodSum, ControlVersion: 10, CreatedAt: ""},
		{ID: 2, EventID: "0190f7d2-0000-7000-8000-000000000014", TenantID: "acme", StackID: "stk-eu-1", Type: "kv.put",
			Key: "tenants/acme", Version: 2, BaseVersion: 1, ArtifactRef: goodSum, Checksum: goodSum, ControlVersion: 20,
			CreatedAt: "2026-06-08T09:15:00+00:00"},
		{ID: 3, EventID: "0190f7d2-0000-7000-8000-00000000001e", TenantID: "globex", StackID: "", Type: "kv.delete",
			Key: "tenants/globex", Version: 3, BaseVersion: 2, ControlVersion: 30, CreatedAt: "2026-06-08T09:16:00Z"},
	}
}

// TestInterop_PredecessorFiles decodes files laid out exactly as the
// predecessor wrote them (testdata/predecessor, <event_id>.json, produced by
// json.MarshalIndent; -update rewrites them), checks every field and extra
// member, and that re-encoding gives the same JSON object.
func TestInterop_PredecessorFiles(t *testing.T) {
	for _, p := range predecessorFeed() {
		path := filepath.Join("testdata", "predecessor", p.EventID+".json")
		written, err := json.MarshalIndent(p, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if *update {
			if err := os.WriteFile(path, written, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		file, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(file, written) {
			t.Fatalf("%s is not json.MarshalIndent's layout (run with -update):\n%s", path, file)
		}
		for _, variant := range [][]byte{file, append(bytes.Clone(file), '\n')} {
			e, err := controlevent.Decode(variant)
			if err != nil {
				t.Fatalf("Decode(%s): %v", path, err)
			}
			if err := e.Validate(); err != nil {
				t.Fatalf("Validate(%s): %v", path, err)
			}
			if e.EventID != p.EventID || e.Type != p.Type || e.Key != p.Key || e.Version != p.Version ||
				e.BaseVersion != p.BaseVersion || e.ArtifactRef != p.ArtifactRef || e.Checksum != p.Checksum ||
				e.ControlVersion != p.ControlVersion {
				t.Errorf("%s decoded as %+v", path, e)
			}
			if got := e.CreatedAtText(); got != p.CreatedAt {
				t.Errorf("%s: CreatedAtText() = %q, want %q", path, got, p.CreatedAt)
			}
			if want, err := time.Parse(time.RFC3339, p.CreatedAt); err == nil && !e.CreatedAt.Equal(want) {
				t.Errorf("%s: CreatedAt = %v, want %v", path, e.CreatedAt, want)
			}
			for name, want := range map[string]string{"id": jsonText(t, p.ID), "tenant_id": jsonText(t, p.TenantID), "stack_id": jsonText(t, p.StackID)} {
				if v, ok := e.ExtraField(name); !ok || string(v) != want {
					t.Errorf("%s: ExtraField(%q) = %s, %v; want %s", path, name, v, ok, want)
				}
			}

			// Re-encoded: the same JSON object, readable by the predecessor.
			b, err := controlevent.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			var before, after map[string]any
			if err := json.Unmarshal(variant, &before); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &after); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(before, after) {
				t.Errorf("%s: re-encoded object differs:\n before %v\n after  %v", path, before, after)
			}
			var back predecessorEvent
			if err := json.Unmarshal(b, &back); err != nil || back != p {
				t.Errorf("%s: the predecessor reads the re-encoding as %+v, %v; want %+v", path, back, err, p)
			}
			if again, err := controlevent.Decode(b); err != nil || again != e {
				t.Errorf("%s: Decode(Marshal(e)) = %+v, %v; want %+v", path, again, err, e)
			}
		}
	}
}

// TestInterop_PlainReader: what controlevent writes is one JSON object that
// a plain encoding/json reader, tolerating members it does not know, reads
// with the documented snake_case names, extra members included.
func TestInterop_PlainReader(t *testing.T) {
	extra, err := controlevent.EncodeExtra(map[string]any{"tenant_id": "acme", "stack_id": "stk-1", "id": 9})
	if err != nil {
		t.Fatal(err)
	}
	e := valid()
	e.Extra = extra
	for _, ev := range []controlevent.Event{valid(), e} {
		b, err := controlevent.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(b) || b[0] != '{' || bytes.ContainsAny(b, "\n") {
			t.Fatalf("Marshal = %q; want one JSON object on one line", b)
		}
		var plain struct {
			EventID        string    `json:"event_id"`
			Type           string    `json:"type"`
			Key            string    `json:"key"`
			ControlVersion uint64    `json:"control_version"`
			CreatedAt      time.Time `json:"created_at"`
			TenantID       string    `json:"tenant_id"`
		}
		if err := json.Unmarshal(b, &plain); err != nil {
			t.Fatalf("encoding/json cannot read %s: %v", b, err)
		}
		if plain.EventID != ev.EventID || plain.Type != ev.Type || plain.Key != ev.Key ||
			plain.ControlVersion != ev.ControlVersion || !plain.CreatedAt.Equal(ev.CreatedAt) {
			t.Errorf("encoding/json read %s as %+v", b, plain)
		}
		if want := map[bool]string{true: "acme", false: ""}[ev.Extra != ""]; plain.TenantID != want {
			t.Errorf("tenant_id = %q, want %q", plain.TenantID, want)
		}
		var pred predecessorEvent
		if err := json.Unmarshal(b, &pred); err != nil || pred.EventID != ev.EventID || pred.ControlVersion != ev.ControlVersion {
			t.Errorf("the predecessor's reader got %+v, %v", pred, err)
		}
	}
}

func jsonText(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
