package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/kv"
)

// TestE2E_BadFile runs a producer and two nodes as processes of the binary
// over a file feed and drops bad files into the feed directory, one at a
// time, while the producer keeps writing:
//
//   - a file that is not JSON (no position can be read from it) and a file
//     claiming a control_version the nodes have already applied, with
//     another event_id (a late write): every node reports the file in
//     feed_error (/v1/status) and controlfeed_feed_read_failing 1
//     (/metrics), applies nothing while it is there, and catches up once it
//     is removed;
//   - at the next control_version, written by a "sidecar" under the
//     directory's lock: a hostile event (path-traversal artifact_ref, no
//     checksum), a file with no readable content under a Sink-style name,
//     and a valid event of an unknown type. The producer writes above each,
//     so it sits between valid events: every node applies everything below
//     it and halts at it (visible in /v1/status and /metrics, the halt
//     error naming the file) while later producer events pile up
//     unapplied, and "controlfeed skip" moves each node on, printing the
//     file and the error.
//
// At the end every node matches the producer (kv digest, cursor == head) and
// holds each producer event once as applied, plus the sidecar's as skipped.
func TestE2E_BadFile(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test with OS processes; skipped with -short")
	}
	ctx := context.Background()
	dir := t.TempDir()
	feedDir, artDir := filepath.Join(dir, "feed"), filepath.Join(dir, "artifacts")
	if err := os.MkdirAll(feedDir, 0o755); err != nil {
		t.Fatal(err)
	}
	store, err := artifact.Open("file", artifact.Config{Dir: artDir})
	if err != nil {
		t.Fatal(err)
	}
	src, err := feed.Open("file", feed.SourceConfig{FileDir: feedDir}) // read-only, for the head
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(src)

	common := []string{"--feed-dir", feedDir, "--artifact-dir", artDir, "--poll-interval", "20ms", "--log-level", "debug"}
	pdb := openTestDB(t, ctx, filepath.Join(dir, "producer.db"))
	producerAddr := freeAddr(t)
	producer := &proc{name: "producer", args: append([]string{"serve", "--db", filepath.Join(dir, "producer.db"),
		"--feed-sink", "file", "--listen", producerAddr}, common...)}
	procs := []*proc{producer}
	type fleetNode struct {
		name, dbPath, addr string
		db                 *sql.DB
		proc               *proc
	}
	var nodes []fleetNode
	for i := 1; i <= 2; i++ {
		n := fleetNode{name: fmt.Sprintf("node%d", i), addr: freeAddr(t)}
		n.dbPath = filepath.Join(dir, n.name+".db")
		n.db = openTestDB(t, ctx, n.dbPath)
		n.proc = &proc{name: n.name, args: append([]string{"serve", "--db", n.dbPath,
			"--feed-source", "file", "--node-name", n.name, "--listen", n.addr}, common...)}
		nodes = append(nodes, n)
		procs = append(procs, n.proc)
	}
	for _, p := range procs {
		p.logf = filepath.Join(dir, p.name+".log")
		p.start(t)
	}
	t.Cleanup(func() {
		for _, p := range procs {
			if p.running() {
				p.kill()
			}
		}
		if t.Failed() {
			for _, p := range procs {
				t.Logf("--- %s log (tail) ---\n%s", p.name, p.logTail())
			}
		}
	})

	// httpGet returns the body of a 200 answer, or "" while the server is
	// not up yet or answers otherwise.
	httpGet := func(addr, path string) string {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			return ""
		}
		return string(b)
	}
	status := func(addr string) (node.Status, bool) {
		var st node.Status
		body := httpGet(addr, "/v1/status")
		if body == "" {
			return st, false
		}
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatalf("GET %s/v1/status: %v\n%s", addr, err, body)
		}
		return st, st.Process != nil
	}
	cursor := func(db *sql.DB) uint64 {
		st, err := node.ReadStatus(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		return st.Cursor
	}

	rev := 0
	produce := func(n int) {
		for range n {
			rev++
			putRetrying(t, ctx, pdb, store, fmt.Sprintf("k%d", rev%7), fmt.Appendf(nil, "value %d", rev))
		}
	}
	// converged waits until the producer's outbox is drained, the feed's
	// head is want and every node's cursor is there.
	converged := func(what string, want uint64) {
		t.Helper()
		var last string
		end := time.Now().Add(60 * time.Second)
		for {
			ps, err := node.ReadStatus(ctx, pdb)
			if err != nil {
				t.Fatal(err)
			}
			h, err := src.(feed.HeadReporter).Head(ctx)
			ok := err == nil && ps.OutboxPending == 0 && h == want
			last = fmt.Sprintf("producer pending %d, head %d (%v), want %d", ps.OutboxPending, h, err, want)
			for _, n := range nodes {
				c := cursor(n.db)
				last += fmt.Sprintf("; %s cursor %d", n.name, c)
				ok = ok && c == want
			}
			if ok {
				return
			}
			if time.Now().After(end) {
				t.Fatalf("%s: no convergence: %s", what, last)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// failedPolls counts the failed reads of the feed naming file in a
	// node's log: a node that logs one more has read the directory again.
	failedPolls := func(p *proc, file string) int {
		b, err := os.ReadFile(p.logf)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for line := range strings.Lines(string(b)) {
			unavailable := strings.Contains(line, `msg="applier: unavailable:`) || strings.Contains(line, `msg="applier: still unavailable"`)
			if unavailable && strings.Contains(line, "op=poll") && strings.Contains(line, file) {
				n++
			}
		}
		return n
	}
	// writeFeedFile adds a file to the feed directory atomically (a
	// temporary name that is not ".json", then a rename), as a sidecar would.
	writeFeedFile := func(name string, b []byte) {
		tmp := filepath.Join(feedDir, name+".partial")
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(feedDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	eventJSON := func(e controlevent.Event) []byte {
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	waitFor(t, 30*time.Second, "the HTTP servers", func() bool {
		for _, addr := range []string{producerAddr, nodes[0].addr, nodes[1].addr} {
			if _, ok := status(addr); !ok {
				return false
			}
		}
		return true
	})
	produce(5)
	events := uint64(5)
	converged("start", events)

	// (a), (b): files that stop every Poll, whatever the cursor, until they
	// are removed: a file whose position cannot be read (it also stops the
	// producer's Sink, which cannot choose the next control_version), and a
	// file that appears at a position the nodes have already applied (a
	// late write: they would never apply it). There the producer goes on
	// and the nodes leave its newer events in the directory unapplied.
	badFiles := []struct {
		what, name  string
		sinkRefuses bool
		body        func(head uint64) []byte
	}{
		{"malformed", "garbage.json", true, func(uint64) []byte { return []byte("{not json at all\x00\xff") }},
		{"late", "conflict.json", false, func(head uint64) []byte {
			return eventJSON(controlevent.Event{EventID: "conflict-1", Type: "kv.delete", Key: "k1",
				ControlVersion: head, CreatedAt: time.Now()})
		}},
	}
	for _, bf := range badFiles {
		head := events
		appliedBefore := make([]int, len(nodes))
		for i, n := range nodes {
			appliedBefore[i] = len(appliedEvents(t, ctx, n.db))
		}
		writeFeedFile(bf.name, bf.body(head))
		for _, n := range nodes {
			waitFor(t, 30*time.Second, fmt.Sprintf("%s: %s to report %s in feed_error and metrics", bf.what, n.name, bf.name), func() bool {
				st, ok := status(n.addr)
				return ok && strings.Contains(st.Process.FeedError, bf.name) && st.Process.FeedErrorSince != nil &&
					strings.Contains(httpGet(n.addr, "/metrics"), "\ncontrolfeed_feed_read_failing 1\n")
			})
		}
		// The producer keeps writing.
		polls := make([]int, len(nodes))
		for i, n := range nodes {
			polls[i] = failedPolls(n.proc, bf.name)
		}
		produce(3)
		if bf.sinkRefuses {
			waitFor(t, 30*time.Second, fmt.Sprintf("%s: the producer's pump to report %s", bf.what, bf.name), func() bool {
				st, ok := status(producerAddr)
				return ok && strings.Contains(st.Process.PumpLastError, bf.name) && st.OutboxPending == 3
			})
		} else {
			waitFor(t, 30*time.Second, fmt.Sprintf("%s: the producer to publish past %s", bf.what, bf.name), func() bool {
				st, ok := status(producerAddr)
				return ok && st.OutboxPending == 0
			})
			for cv := head + 1; cv <= head+3; cv++ {
				if _, err := os.Stat(filepath.Join(feedDir, fmt.Sprintf("%020d.json", cv))); err != nil {
					t.Fatalf("%s: the producer's event %d is not in the feed: %v", bf.what, cv, err)
				}
			}
		}
		for i, n := range nodes {
			waitFor(t, 30*time.Second, fmt.Sprintf("%s: %s to read the feed again", bf.what, n.name), func() bool {
				return failedPolls(n.proc, bf.name) > polls[i]
			})
			st, _ := status(n.addr)
			if st.Cursor != head || cursor(n.db) != head {
				t.Errorf("%s: %s cursor %d (status %d) with the bad file present, want %d", bf.what, n.name, cursor(n.db), st.Cursor, head)
			}
			if got := len(appliedEvents(t, ctx, n.db)); got != appliedBefore[i] {
				t.Errorf("%s: %s applied_events grew from %d to %d with the bad file present", bf.what, n.name, appliedBefore[i], got)
			}
			if st.Process == nil || !strings.Contains(st.Process.FeedError, bf.name) {
				t.Errorf("%s: %s feed_error no longer names %s: %+v", bf.what, n.name, bf.name, st.Process)
			}
		}
		if err := os.Remove(filepath.Join(feedDir, bf.name)); err != nil {
			t.Fatal(err)
		}
		events += 3
		converged(bf.what+" file removed", events)
		for _, n := range nodes {
			waitFor(t, 30*time.Second, fmt.Sprintf("%s: %s to clear feed_error", bf.what, n.name), func() bool {
				st, ok := status(n.addr)
				return ok && st.Process.FeedError == "" && st.Process.FeedErrorSince == nil &&
					strings.Contains(httpGet(n.addr, "/metrics"), "\ncontrolfeed_feed_read_failing 0\n")
			})
		}
	}

	// (c)-(e): a file at the next position, written by a sidecar that
	// follows the directory's protocol (the lock, then the next
	// control_version), that the nodes cannot apply: not a valid event
	// (with a readable event_id, then with no readable content under a
	// Sink-style name) and a valid event of a type no node handles. Each
	// time, the producer goes on above it, so the bad file sits between
	// valid events: every node applies everything below it, halts at it
	// (visible in /v1/status and /metrics) while the events above it pile
	// up unapplied, and "controlfeed skip" moves each node on, printing
	// the file and the error it halted with.
	halting := []struct {
		what, name, eventID, errText string
		body                         func(cv uint64) []byte
	}{
		{"invalid", "hostile.json", "hostile-1", "checksum", func(cv uint64) []byte {
			return eventJSON(controlevent.Event{EventID: "hostile-1", Type: "kv.put", Key: "k1",
				ArtifactRef: "../../etc/passwd", ControlVersion: cv, CreatedAt: time.Now()})
		}},
		{"unreadable", "", "", "invalid control event", func(uint64) []byte { return []byte("\x00\x01 not an event") }},
		{"unknown type", "sidecar-chaos.json", "chaos-sidecar-1", "chaos.unknown", func(cv uint64) []byte {
			return eventJSON(controlevent.Event{EventID: "chaos-sidecar-1", Type: "chaos.unknown",
				Key: "k1", ControlVersion: cv, CreatedAt: time.Now()})
		}},
	}
	var passed []string
	for _, hf := range halting {
		head, err := src.(feed.HeadReporter).Head(ctx)
		if err != nil || head != events {
			t.Fatalf("%s: head %d, %v; want %d", hf.what, head, err, events)
		}
		cv := head + 1
		name, id := hf.name, hf.eventID
		if name == "" {
			name, id = fmt.Sprintf("%020d.json", cv), feed.UnreadableEventID(cv)
		}
		lock, err := os.OpenFile(filepath.Join(feedDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
			t.Fatal(err)
		}
		writeFeedFile(name, hf.body(cv))
		lock.Close() // releases the lock
		for _, n := range nodes {
			waitFor(t, 30*time.Second, fmt.Sprintf("%s: %s to halt at %s", hf.what, n.name, id), func() bool {
				st, ok := status(n.addr)
				return ok && st.Halted != nil && st.Halted.EventID == id &&
					strings.Contains(httpGet(n.addr, "/metrics"), "\ncontrolfeed_halted 1\n")
			})
		}
		attempts := make([]int, len(nodes))
		for i, n := range nodes {
			st, _ := status(n.addr)
			attempts[i] = st.Halted.Attempts
		}
		produce(3)
		events = cv + 3
		waitFor(t, 30*time.Second, hf.what+": the producer to publish past the sidecar's file", func() bool {
			ps, err := node.ReadStatus(ctx, pdb)
			h, herr := src.(feed.HeadReporter).Head(ctx)
			return err == nil && herr == nil && ps.OutboxPending == 0 && h == events
		})
		for c := cv + 1; c <= events; c++ {
			if _, err := os.Stat(filepath.Join(feedDir, fmt.Sprintf("%020d.json", c))); err != nil {
				t.Fatalf("%s: the producer's event %d is not in the feed above the bad file: %v", hf.what, c, err)
			}
		}
		for i, n := range nodes {
			var st node.Status
			waitFor(t, 30*time.Second, n.name+" to retry the halted event", func() bool {
				st, _ = status(n.addr)
				return st.Halted != nil && st.Halted.Attempts > attempts[i]
			})
			if st.Halted == nil || st.Halted.EventID != id || st.Halted.ControlVersion != cv || !strings.Contains(st.Halted.Error, hf.errText) {
				t.Errorf("%s: %s halted = %+v, want event %s at %d with an error saying %q", hf.what, n.name, st.Halted, id, cv, hf.errText)
			}
			if hf.what != "unknown type" && !strings.Contains(st.Halted.Error, name) {
				t.Errorf("%s: %s halt error %q does not name the file %s", hf.what, n.name, st.Halted.Error, name)
			}
			if c := cursor(n.db); c != head {
				t.Errorf("%s: %s cursor %d while halted at %d, want %d (everything below it applied, nothing above)", hf.what, n.name, c, cv, head)
			}
			out := mustRun(t, nil, "", "skip", "--db", n.dbPath, id)
			if !strings.Contains(out, "skipped event "+id) || !strings.Contains(out, hf.errText) ||
				hf.what != "unknown type" && !strings.Contains(out, name) {
				t.Errorf("%s: %s: skip printed %q; want the event, the file %s and the error", hf.what, n.name, out, name)
			}
		}
		converged(hf.what+": after skip", events)
		passed = append(passed, id)
	}

	// Every node matches the producer: same kv digest, each producer event
	// applied exactly once, the sidecar's event recorded as skipped.
	want, err := kv.Digest(ctx, pdb)
	if err != nil {
		t.Fatal(err)
	}
	var producerIDs []string
	rows, err := pdb.QueryContext(ctx, `SELECT event_id FROM controlfeed_outbox WHERE published_control_version IS NOT NULL`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		producerIDs = append(producerIDs, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	if uint64(len(producerIDs)) != events-uint64(len(passed)) {
		t.Errorf("producer published %d events, want %d", len(producerIDs), events-uint64(len(passed)))
	}
	for _, n := range nodes {
		if got, err := kv.Digest(ctx, n.db); err != nil || got != want {
			t.Errorf("%s: kv digest %s (%v), producer's %s", n.name, got, err, want)
		}
		applied := appliedEvents(t, ctx, n.db)
		if len(applied) != len(producerIDs)+len(passed) {
			t.Errorf("%s: %d rows in applied_events, want %d", n.name, len(applied), len(producerIDs)+len(passed))
		}
		for _, id := range producerIDs {
			if applied[id] != "applied" {
				t.Errorf("%s: producer event %s has outcome %q, want applied", n.name, id, applied[id])
			}
		}
		for _, id := range passed {
			if applied[id] != "skipped" {
				t.Errorf("%s: sidecar event %s has outcome %q, want skipped", n.name, id, applied[id])
			}
		}
		if st, ok := status(n.addr); !ok || st.Halted != nil || st.Process.FeedError != "" {
			t.Errorf("%s: status after convergence: %+v", n.name, st)
		}
	}
	for _, p := range procs {
		if err := p.stop(); err != nil {
			t.Errorf("%s: exit after SIGTERM: %v", p.name, err)
		}
	}
}
