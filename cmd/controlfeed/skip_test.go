package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/internal/failpoint"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/kv"
)

// TestSkip halts a node on an event of an unknown type, checks that status
// shows the halt, skips it with the CLI and checks the node moves on.
func TestSkip(t *testing.T) {
	dir := t.TempDir()
	fcfg := feed.SourceConfig{FileDir: filepath.Join(dir, "feed")}
	sink, err := feed.OpenSink("file", fcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(sink)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := sink.Append(ctx, controlevent.Event{EventID: "evt-bad", Type: "no.such.type", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "n.db")
	n, err := node.Open(ctx, &node.Config{DB: db, FeedSource: "file", Feed: fcfg})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()

	env := []string{"CONTROLFEED_DB=" + db}
	var st map[string]any
	waitFor(t, 30*time.Second, "status to show the halt", func() bool {
		if err := json.Unmarshal([]byte(mustRun(t, env, "", "status", "--json")), &st); err != nil {
			t.Fatal(err)
		}
		return st["halted"] != nil
	})
	if h := st["halted"].(map[string]any); h["event_id"] != "evt-bad" || !strings.Contains(h["error"].(string), "no.such.type") {
		t.Errorf("halted = %v", h)
	}
	if text := mustRun(t, env, "", "status"); !strings.Contains(text, "controlfeed skip --db "+db+" evt-bad") {
		t.Errorf("status text does not say how to skip:\n%s", text)
	}

	if _, _, err := run(t, env, "", "skip", "evt-other"); err == nil {
		t.Error("skip of an event that is not halted succeeded")
	}
	out := mustRun(t, env, "", "skip", "evt-bad")
	if !strings.Contains(out, "skipped event evt-bad (control_version 1, type no.such.type)") {
		t.Errorf("skip printed %q", out)
	}
	waitFor(t, 30*time.Second, "the node to move past the skipped event", func() bool {
		json.Unmarshal([]byte(mustRun(t, env, "", "status", "--json")), &st)
		return st["cursor"] == float64(1) && st["halted"] == nil
	})
	if st["skipped"] != float64(1) || st["applied"] != float64(0) {
		t.Errorf("after skip: %v", st)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// TestSkip_RefusesWhenUnavailable runs a node whose apply transactions fail
// on a full disk: status shows no halt, skip refuses (the event is fine, the
// disk is not) and says why, and the node applies the event once the disk
// has room.
func TestSkip_RefusesWhenUnavailable(t *testing.T) {
	dir := t.TempDir()
	fcfg := feed.SourceConfig{FileDir: filepath.Join(dir, "feed")}
	sink, err := feed.OpenSink("file", fcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(sink)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := sink.Append(ctx, controlevent.Event{EventID: "evt-ok", Type: kv.TypeDelete, Key: "k", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := failpoint.Enable(failpoint.ApplierBeforeCommit + "=enospc"); err != nil {
		t.Fatal(err)
	}
	defer failpoint.Disable()
	db := filepath.Join(dir, "n.db")
	n, err := node.Open(ctx, &node.Config{DB: db, FeedSource: "file", Feed: fcfg, PollInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	waitFor(t, 30*time.Second, "the node to be unavailable", func() bool {
		s, err := n.Status(ctx)
		return err == nil && s.Unavailable != nil && s.Unavailable.Attempts >= 2
	})

	env := []string{"CONTROLFEED_DB=" + db}
	var st map[string]any
	if err := json.Unmarshal([]byte(mustRun(t, env, "", "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st["halted"] != nil || st["state"] != nil {
		t.Errorf("status --json of an unavailable node: halted %v, state %v; want neither stored", st["halted"], st["state"])
	}
	if text := mustRun(t, env, "", "status"); !strings.Contains(text, "halted:          no (unavailability and gaps are not stored") {
		t.Errorf("status text:\n%s", text)
	}
	_, _, err = run(t, env, "", "skip", "evt-ok")
	if err == nil || !strings.Contains(err.Error(), "not halted") || !strings.Contains(err.Error(), "unavailable") {
		t.Fatalf("skip on an unavailable node: %v; want a refusal saying it is not halted", err)
	}

	failpoint.Disable()
	waitFor(t, 30*time.Second, "the node to apply the event", func() bool {
		json.Unmarshal([]byte(mustRun(t, env, "", "status", "--json")), &st)
		return st["cursor"] == float64(1)
	})
	if st["applied"] != float64(1) || st["skipped"] != float64(0) || st["halted"] != nil {
		t.Errorf("after recovery: %v", st)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}
