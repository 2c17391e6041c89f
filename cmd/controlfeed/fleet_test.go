package main

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/fleet"
	"github.com/controlfeed/controlfeed/internal/natsembed"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
)

// TestFleet runs a producer and five nodes and checks what "fleet" shows
// of them: two synced, one halted at an event whose artifact it refuses,
// one whose kv table was edited locally (its application digest differs),
// one stopped (stale); that "fleet wait" exits 0 once every live node
// applied an event and fails naming the halted node otherwise; that
// "fleet event" tells each node's outcome; and that "fleet forget" removes
// the stopped node (and, on jetstream, its durable consumer).
func TestFleet(t *testing.T) {
	t.Run("file", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		feedDir := filepath.Join(dir, "feed")
		env := []string{"CONTROLFEED_FEED_DIR=" + feedDir, "CONTROLFEED_ARTIFACT_DIR=" + filepath.Join(dir, "art")}
		testFleet(t, dir, env, []string{"--feed-sink", "file"}, []string{"--feed-source", "file"}, nil)
	})
	t.Run("jetstream", func(t *testing.T) {
		t.Parallel()
		srv := natsembed.StartForTest(t)
		env := []string{"CONTROLFEED_NATS_URL=" + srv.ClientURL(), "CONTROLFEED_ARTIFACT_STORE=jetstream"}
		testFleet(t, t.TempDir(), env, []string{"--feed-sink", "jetstream"}, []string{"--feed-source", "jetstream"}, func(t *testing.T, node string) bool {
			nc, err := nats.Connect(srv.ClientURL())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			_, err = js.Consumer(context.Background(), natsfeed.DefaultStream, natsfeed.DurableName(node))
			if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
				t.Fatal(err)
			}
			return err == nil
		})
	})
}

func testFleet(t *testing.T, dir string, env, producer, node []string, hasConsumer func(*testing.T, string) bool) {
	env = append(env, "CONTROLFEED_POLL_INTERVAL=20ms", "CONTROLFEED_FLEET_HEARTBEAT=200ms",
		"CONTROLFEED_APP_DIGEST_INTERVAL=50ms", "CONTROLFEED_STALE_AFTER=2s")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type proc struct {
		cancel context.CancelFunc
		done   chan error
	}
	procs := map[string]*proc{}
	serve := func(name string, args ...string) {
		pctx, pcancel := context.WithCancel(ctx)
		p := &proc{cancel: pcancel, done: make(chan error, 1)}
		procs[name] = p
		go func() {
			m := &Main{Environ: func() []string { return env }}
			p.done <- m.Run(pctx, append([]string{"serve", "--db", filepath.Join(dir, name+".db"), "--node-name", name}, args...))
		}()
	}
	stop := func(name string) {
		p := procs[name]
		p.cancel()
		if err := <-p.done; err != nil {
			t.Errorf("serve %s: %v", name, err)
		}
		delete(procs, name)
	}
	defer func() {
		for name := range procs {
			stop(name)
		}
	}()
	pdb := filepath.Join(dir, "producer.db")
	serve("producer", producer...)
	mustRun(t, env, "", "kv", "put", "--db", pdb, "a", "1")
	mustRun(t, env, "", "kv", "put", "--db", pdb, "b", "2")
	waitFor(t, 30*time.Second, "the feed to hold 2 events", func() bool {
		out, _, err := run(t, env, "", "tail", "--follow=false", node[0], node[1])
		return err == nil && strings.Count(out, "\n") == 2
	})
	names := []string{"n-ok", "n-ok2", "n-halt", "n-tamper", "n-stop"}
	for _, n := range names {
		args := node
		if n == "n-halt" {
			args = append(append([]string(nil), node...), "--max-artifact-bytes", "8")
		}
		serve(n, args...)
	}
	view := func() map[string]fleet.Row {
		out, errOut, err := run(t, env, "", "fleet", "--json", node[0], node[1])
		if err != nil {
			t.Fatalf("fleet --json: %v\n%s", err, errOut)
		}
		var v struct {
			Head  uint64      `json:"head"`
			Nodes []fleet.Row `json:"nodes"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("fleet --json: %v\n%s", err, out)
		}
		rows := map[string]fleet.Row{}
		for _, r := range v.Nodes {
			rows[r.Node] = r
		}
		return rows
	}
	waitFor(t, 30*time.Second, "every node synced at cursor 2", func() bool {
		rows := view()
		for _, n := range names {
			if r, ok := rows[n]; !ok || r.State != fleet.StateSynced || r.Cursor != 2 {
				return false
			}
		}
		return true
	})
	if out := mustRun(t, env, "", "fleet", "wait", "--cv", "2", "--timeout", "20s", node[0], node[1]); !strings.Contains(out, "applied on 5 node(s)") {
		t.Errorf("fleet wait --cv 2 = %q", out)
	}

	// n-stop stops; n-halt cannot take the next value; n-tamper's table is
	// edited behind its applier's back.
	stop("n-stop")
	big := strings.TrimSpace(mustRun(t, env, "", "kv", "put", "--db", pdb, "c", "a value longer than 8 bytes"))
	db, err := sqlitedb.Open(ctx, filepath.Join(dir, "n-tamper.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `UPDATE controlfeed_kv SET value = 'edited' WHERE key = 'a'`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	var rows map[string]fleet.Row
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		rows = view()
		ok, h, tm, st := rows["n-ok"], rows["n-halt"], rows["n-tamper"], rows["n-stop"]
		if ok.State == fleet.StateSynced && ok.Cursor == 3 && ok.Digest.Status == fleet.AgreementAgrees &&
			h.State == fleet.StateHalted && h.Halted != nil && h.Halted.EventID == big && h.Cursor == 2 &&
			tm.State == fleet.StateSynced && tm.Cursor == 3 && tm.Digest.Status == fleet.AgreementDiffers &&
			st.State == fleet.StateStale && st.Cursor == 2 {
			break
		}
		if time.Now().After(end) {
			b, _ := json.MarshalIndent(rows, "", "  ")
			t.Fatalf("fleet --json does not show synced, halted, differing and stale nodes after 30s:\n%s", b)
		}
	}
	if h := rows["n-halt"].Halted; !strings.Contains(h.Error, "8") {
		t.Errorf("n-halt halted with %q; want the artifact size limit", h.Error)
	}
	if d := rows["n-tamper"].Digest; len(d.Details) == 0 || !strings.Contains(d.Details[0], "application digest at cursor 3") {
		t.Errorf("n-tamper digest = %+v; want the application digest at cursor 3 named", d)
	}
	if got := mustRun(t, env, "", "fleet", node[0], node[1]); !strings.Contains(got, "DIFFERS (vs 2 nodes)") || !strings.Contains(got, "halted") || !strings.Contains(got, "stale") {
		t.Errorf("fleet table:\n%s", got)
	}
	// Without --feed-source, the feed directory or the broker's URL in the
	// environment says which fleet to read.
	if got := mustRun(t, env, "", "fleet"); !strings.Contains(got, "n-tamper") || !strings.Contains(got, "DIFFERS") {
		t.Errorf("fleet without --feed-source:\n%s", got)
	}

	// wait: the live nodes but n-halt applied the event; n-stop is left out.
	_, _, err = run(t, env, "", "fleet", "wait", "--event", big, "--timeout", "1s", node[0], node[1])
	if err == nil || !strings.Contains(err.Error(), "n-halt: halted at this event") || !strings.Contains(err.Error(), "left out as stale") ||
		!strings.Contains(err.Error(), "n-stop") {
		t.Errorf("fleet wait for the event n-halt refuses: %v; want a failure naming n-halt and the stale n-stop", err)
	}
	if out := mustRun(t, env, "", "fleet", "wait", "--event", big, "--nodes", "3", "--timeout", "20s", node[0], node[1]); !strings.Contains(out, "n-ok") {
		t.Errorf("fleet wait --nodes 2 = %q", out)
	}
	var ev eventView
	if err := json.Unmarshal([]byte(mustRun(t, env, "", "fleet", "event", big, "--json", node[0], node[1])), &ev); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range ev.Nodes {
		got[r.Node] = r.Outcome
	}
	if want := map[string]string{"n-ok": "applied", "n-ok2": "applied", "n-tamper": "applied", "n-halt": "halted here", "n-stop": "not yet"}; !equalMaps(got, want) || ev.ControlVersion != 3 {
		t.Errorf("fleet event = %v at %d; want %v at 3", got, ev.ControlVersion, want)
	}

	// forget: a live node is refused, an unknown one named, the stopped
	// one removed with its consumer.
	if _, _, err := run(t, env, "", "fleet", "forget", "n-ok", node[0], node[1]); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("forget of a live node: %v; want a refusal", err)
	}
	if _, _, err := run(t, env, "", "fleet", "forget", "n-nope", node[0], node[1]); err == nil || !strings.Contains(err.Error(), `unknown node "n-nope"`) || !strings.Contains(err.Error(), "n-ok") {
		t.Errorf("forget of an unknown node: %v", err)
	}
	if hasConsumer != nil && !hasConsumer(t, "n-stop") {
		t.Fatal("n-stop has no durable consumer before forget")
	}
	mustRun(t, env, "", "fleet", "forget", "n-stop", node[0], node[1])
	if _, ok := view()["n-stop"]; ok {
		t.Error("n-stop still in fleet after forget")
	}
	if hasConsumer != nil && hasConsumer(t, "n-stop") {
		t.Error("n-stop's durable consumer survived forget")
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
