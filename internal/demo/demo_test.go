package demo_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"

	_ "github.com/controlfeed/controlfeed/artifact/filestore"
	_ "github.com/controlfeed/controlfeed/artifact/natsobject"
	_ "github.com/controlfeed/controlfeed/feed/filesource"
	_ "github.com/controlfeed/controlfeed/feed/natsfeed"
	_ "github.com/controlfeed/controlfeed/feed/nop"

	"github.com/controlfeed/controlfeed/internal/demo"
)

func TestRun_Pass(t *testing.T) {
	for _, f := range []string{demo.FeedJetStream, demo.FeedFile} {
		t.Run(f, func(t *testing.T) {
			var out, prog bytes.Buffer
			res, err := demo.Run(t.Context(), demo.Options{Nodes: 2, Events: 60, Feed: f, Dir: t.TempDir(),
				Out: &out, Progress: &prog})
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, out.String())
			}
			if !res.Passed() || res.Events != 60 || len(res.Nodes) != 2 {
				t.Fatalf("result %+v", res)
			}
			for _, n := range res.Nodes {
				if n.Cursor != 60 || n.Applied != 60 || n.Digest != res.Digest {
					t.Errorf("%s: cursor %d applied %d digest %s, want 60, 60, %s", n.Name, n.Cursor, n.Applied, n.Digest, res.Digest)
				}
			}
			// Every (node, event) pair got an apply time after its commit.
			if l := res.Latency; l.N != 120 || l.P50 <= 0 || l.P50 > l.P99 || l.P99 > l.P999 || l.P999 > l.Max {
				t.Errorf("latency %+v: want 120 ordered, positive samples", l)
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if last := lines[len(lines)-1]; !strings.HasPrefix(last, "PASS: 2 nodes identical to the producer") ||
				!strings.Contains(last, "60 events applied once each") {
				t.Errorf("verdict line %q", last)
			}
		})
	}
}

// TestRun_Diverged tampers with two nodes after they caught up: one kv row
// changed behind the applier's back, one applied_events row lost. The demo
// must notice both and fail.
func TestRun_Diverged(t *testing.T) {
	var out bytes.Buffer
	res, err := demo.Run(t.Context(), demo.Options{Nodes: 3, Events: 40, Feed: demo.FeedFile, Dir: t.TempDir(), Out: &out,
		Tamper: func(ctx context.Context, i int, db *sql.DB) error {
			var q string
			switch i {
			case 0:
				q = `UPDATE controlfeed_kv SET value = x'00' WHERE key = (SELECT MIN(key) FROM controlfeed_kv)`
			case 2:
				q = `DELETE FROM controlfeed_applied_events WHERE event_id = (SELECT MIN(event_id) FROM controlfeed_applied_events)`
			default:
				return nil
			}
			r, err := db.ExecContext(ctx, q)
			if err != nil {
				return err
			}
			if n, _ := r.RowsAffected(); n != 1 {
				return fmt.Errorf("tamper %d: %d rows changed", i, n)
			}
			return nil
		}})
	if !errors.Is(err, demo.ErrDiverged) {
		t.Fatalf("Run: %v, want ErrDiverged\n%s", err, out.String())
	}
	if res == nil || res.Passed() {
		t.Fatalf("result %+v passed", res)
	}
	got := out.String()
	for _, want := range []string{"node1: kv digest", "node3: 39 events in applied_events, the feed holds 40", "FAIL: "} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "node2:") && strings.Contains(got, "problem: node2") {
		t.Errorf("the untouched node2 was reported:\n%s", got)
	}
	if strings.Contains(got, "PASS") {
		t.Errorf("output says PASS:\n%s", got)
	}
}

func TestOptions_Validate(t *testing.T) {
	for _, o := range []demo.Options{{Nodes: -1}, {Events: -2}, {Feed: "kafka"}, {Rate: -1}} {
		if err := o.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil", o)
		}
	}
	if _, err := demo.Run(t.Context(), demo.Options{Feed: "kafka"}); err == nil || !strings.Contains(err.Error(), "kafka") {
		t.Errorf("Run with feed kafka: %v", err)
	}
}
