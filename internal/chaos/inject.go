package chaos

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/internal/failpoint"
	"github.com/controlfeed/controlfeed/kv"
)

// Kinds of bad input.
const (
	BadConflict = "conflict"         // an applied EventID re-published with other content
	BadUnknown  = "unknown-type"     // an event type no handler knows
	BadPoison   = "poison"           // a kv event whose handler fails (invalid key)
	BadMissing  = "missing-artifact" // an artifact absent from the store, then restored
	BadCorrupt  = "corrupt-artifact" // an artifact whose bytes are corrupted, then restored
)

var badKinds = []string{BadConflict, BadUnknown, BadPoison, BadMissing, BadCorrupt}

// wantHalt is a substring every node's halt error must contain.
var wantHalt = map[string]string{
	BadConflict: "different content",
	BadUnknown:  "no handler",
	BadPoison:   "control character",
	BadMissing:  "not found",
	BadCorrupt:  "corrupt",
	// A security halt's error ends with its reason in parentheses.
	ForgedUnsigned:   "(" + ForgedUnsigned + ")",
	ForgedUnknownKey: "(" + ForgedUnknownKey + ")",
	ForgedAltered:    "(" + ForgedAltered + ")",
	// Both break the chain; a swap's detail also says where the missing
	// event follows (applier: reordered).
	ForgedDropped: "(chain-gap)",
	ForgedSwapped: ": reordered (chain-gap)",
}

// injection is one bad input the harness published.
type injection struct {
	kind  string
	id    string
	cv    uint64
	key   string
	value []byte     // for artifact kinds: the value the node ends up with
	fix   *streamFix // for dropped and swapped: the operator's repair (hostile.go)
}

// publish publishes e's wire form with Msg-Id = e.EventID and returns the
// ack. It retries while the broker is down, until ctx is done.
func (h *harness) publish(ctx context.Context, e controlevent.Event) (*jetstream.PubAck, error) {
	return h.publishAs(ctx, e, e.EventID)
}

// headSamples remembers the stream head over time, so the duplicate
// injectors pick only events stored longer ago than the duplicate window.
type headSamples struct {
	mu sync.Mutex
	s  []struct {
		at   time.Time
		head uint64
	}
}

func (hs *headSamples) add(head uint64) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.s = append(hs.s, struct {
		at   time.Time
		head uint64
	}{time.Now(), head})
}

// before returns the newest head sampled at least age ago (0 if none).
func (hs *headSamples) before(age time.Duration) uint64 {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	var h uint64
	for _, x := range hs.s {
		if time.Since(x.at) >= age {
			h = x.head
		}
	}
	return h
}

var samples headSamples

// oldEvents returns up to n random producer events published at or before
// stream sequence maxCV, decoded from their outbox rows; in a signed run,
// their first copies in the stream, as the pump signed them (a republish
// of the unsigned outbox payload is other content than what the nodes
// applied).
func (h *harness) oldEvents(ctx context.Context, maxCV uint64, n int) ([]controlevent.Event, error) {
	if h.cfg.Signed {
		return h.signedOlds(ctx, maxCV, n)
	}
	rows, err := h.producer().QueryContext(ctx, `SELECT payload_json FROM controlfeed_outbox
		WHERE published_control_version IS NOT NULL AND published_control_version <= ? ORDER BY random() LIMIT ?`, int64(maxCV), n)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []controlevent.Event
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, err
		}
		e, err := controlevent.Decode([]byte(p))
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// duplicates re-publishes already-published events unchanged (same EventID,
// same content) once the duplicate window has passed, so the broker stores
// them again under new sequences and every node receives them again.
func (h *harness) duplicates(ctx context.Context, done <-chan struct{}) {
	target := (h.cfg.DuplicateDeliveries + h.cfg.Nodes - 1) / h.cfg.Nodes
	const every = 250 * time.Millisecond
	// Spread the target over the first three quarters of the run, and
	// catch up on rounds lost to broker outages: each round takes its share
	// of what is still missing over the rounds that are left.
	deadline := time.Now().Add(h.cfg.Duration * 3 / 4)
	age := h.cfg.DupWindow + time.Second
	logged := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case <-time.After(every):
		}
		if hd, err := h.head(ctx); err == nil {
			samples.add(hd)
		}
		h.mu.Lock()
		missing := target - h.rep.ForcedDuplicates
		h.mu.Unlock()
		if missing <= 0 {
			continue
		}
		roundsLeft := max(int(time.Until(deadline)/every), 1)
		batch := min(max((missing+roundsLeft-1)/roundsLeft, 1), 500)
		maxCV := samples.before(age)
		if maxCV == 0 {
			continue
		}
		evs, err := h.oldEvents(ctx, maxCV, batch)
		if err != nil {
			if logged < 5 && ctx.Err() == nil {
				logged++
				h.logf("forced duplicates: pick %d old events: %v (next round)", batch, err)
			}
			continue
		}
		for _, e := range evs {
			h.mu.Lock()
			skip := h.hostile[e.EventID] // its copy could come before the operator's repair
			h.mu.Unlock()
			if skip {
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			ack, err := h.publishOnce(pctx, e)
			cancel()
			if err != nil {
				break // broker down: next round
			}
			if !ack.Duplicate {
				h.mu.Lock()
				h.rep.ForcedDuplicates++
				h.forced[ack.Sequence] = true
				h.mu.Unlock()
			}
		}
	}
}

func (h *harness) publishOnce(ctx context.Context, e controlevent.Event) (*jetstream.PubAck, error) {
	e.ControlVersion = 0
	body, err := controlevent.Marshal(e)
	if err != nil {
		return nil, err
	}
	return h.js.PublishMsg(ctx, &nats.Msg{Subject: natsfeed.DefaultSubject, Data: body, Header: nats.Header{}},
		jetstream.WithMsgID(e.EventID), jetstream.WithExpectStream(natsfeed.DefaultStream))
}

// badInputs publishes bad inputs one at a time, waits until every node
// halts at each (the fault is detected), then resolves it: an operator
// skip on each node, or a repair of the artifact.
func (h *harness) badInputs(ctx context.Context, done <-chan struct{}) {
	// Let the pipeline start first.
	sleepCtx(ctx, 3*time.Second)
	// Pace the inputs to finish within two thirds of the run, catching up
	// (no pause) when resolutions were slowed by broker outages.
	deadline := time.Now().Add(h.cfg.Duration * 2 / 3)
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		default:
		}
		if h.rep.badTotal() >= h.cfg.BadInputs {
			sleepCtx(ctx, time.Second)
			continue
		}
		t0 := time.Now()
		kinds := badKinds
		if h.cfg.Signed {
			kinds = forgedKinds
			if !h.cfg.HostileBroker {
				kinds = forgedKinds[:len(forgedKinds)-2] // without dropped and swapped
			}
		}
		kind := kinds[i%len(kinds)]
		h.wipe.inject.Lock() // no node wiped while a bad input is resolved
		inj, err := h.injectBad(ctx, kind, i)
		if err != nil {
			h.wipe.inject.Unlock()
			if ctx.Err() == nil {
				h.logf("inject %s: %v", kind, err)
			}
			continue
		}
		h.mu.Lock()
		h.rep.BadInputs[kind]++
		h.injected[fmt.Sprintf("%s@%d", inj.id, inj.cv)] = inj
		if inj.value != nil {
			// The event's checksum names these bytes: a node passes it
			// only by applying them, whether or not the harness saw its
			// own repair succeed (a Put can fail after storing the object
			// whole, and the nodes can pass the event before the retry).
			h.rep.expected[inj.key] = inj.value
		}
		h.mu.Unlock()
		h.resolve(ctx, inj)
		h.wipe.inject.Unlock()
		if left := h.cfg.BadInputs - h.rep.badTotal(); left > 0 {
			sleepCtx(ctx, time.Until(deadline)/time.Duration(left)-time.Since(t0))
		}
	}
}

func (h *harness) injectBad(ctx context.Context, kind string, i int) (injection, error) {
	if isForged(kind) {
		return h.injectForged(ctx, kind, i)
	}
	now := time.Now().UTC()
	e := controlevent.Event{EventID: uuid.Must(uuid.NewV7()).String(), Type: kv.TypePut, Version: 1, CreatedAt: now}
	inj := injection{kind: kind}
	switch kind {
	case BadConflict:
		maxCV := samples.before(h.cfg.DupWindow + time.Second)
		if maxCV == 0 {
			return inj, errors.New("no event old enough yet")
		}
		evs, err := h.oldEvents(ctx, maxCV, 1)
		if err != nil || len(evs) == 0 {
			return inj, fmt.Errorf("pick an old event: %v", err)
		}
		e = evs[0]
		e.Key = fmt.Sprintf("chaos-conflict/%d", i) // same EventID, other content
	case BadUnknown:
		e.Type, e.Key = "chaos.unknown", fmt.Sprintf("chaos/unknown/%d", i)
	case BadPoison:
		e.Type, e.Key = kv.TypeDelete, fmt.Sprintf("chaos\x01poison/%d", i)
	case BadMissing, BadCorrupt:
		inj.key = fmt.Sprintf("chaos/%s/%d", kind, i)
		inj.value = []byte(fmt.Sprintf("value of %s, injected at %s", inj.key, now))
		sum := sha256.Sum256(inj.value)
		ref := controlevent.ChecksumPrefix + hex.EncodeToString(sum[:])
		e.Key, e.ArtifactRef, e.Checksum = inj.key, ref, ref
		if kind == BadCorrupt {
			if err := h.corruptArtifact(ctx, ref, inj.value); err != nil {
				return inj, err
			}
		}
	}
	ack, err := h.publish(ctx, e)
	if err != nil {
		return inj, err
	}
	// A Duplicate ack is normally publish's own retry resolving to the
	// sequence of the first attempt; for a conflict it may instead be the
	// original event, still inside the window: then nothing was injected.
	// The copy it resolved to may also be a forced duplicate of the
	// original republished moments ago: so compare the stored content.
	if ack.Duplicate && kind == BadConflict {
		// The message is in the stream whatever happens next: retry the
		// read-back across a broker restart or stall rather than drop an
		// injection the nodes will halt at.
		var stored controlevent.Event
		var err error
		for end := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
			if stored, err = h.storedEvent(ctx, ack.Sequence); err == nil || time.Now().After(end) || ctx.Err() != nil {
				break
			}
		}
		if err != nil {
			return inj, fmt.Errorf("read back conflict at %d: %w", ack.Sequence, err)
		}
		if stored.Key != e.Key {
			return inj, fmt.Errorf("event %s deduplicated against an earlier copy at %d", e.EventID, ack.Sequence)
		}
	}
	inj.id, inj.cv = e.EventID, ack.Sequence
	return inj, nil
}

// haltOf reads node i's persisted halt and cursor.
func haltOf(ctx context.Context, db *sql.DB) (cursor uint64, id string, cv uint64, msg string, err error) {
	if cursor, err = applier.ReadCursor(ctx, db); err != nil {
		return
	}
	var c int64
	err = db.QueryRowContext(ctx, `SELECT event_id, control_version, error FROM controlfeed_halt WHERE id = 1`).Scan(&id, &c, &msg)
	if errors.Is(err, sql.ErrNoRows) {
		return cursor, "", 0, "", nil
	}
	return cursor, id, uint64(c), msg, err
}

// resolve waits until every node halted at inj (counting detections) and
// resolves it; a node that moves past inj without halting is a problem.
func (h *harness) resolve(ctx context.Context, inj injection) {
	n := len(h.nodeDBList())
	detected := make([]bool, n)
	settled := make([]bool, n)
	skipped := make([]bool, n)
	firstSeen := make([]time.Time, n) // a swapped halt first seen without the reorder detail
	deadline := time.Now().Add(2 * time.Minute)
	var repairErr error
	if inj.fix != nil {
		defer func() {
			if !inj.fix.done {
				inj.fix.release() // the pump runs again whatever happened
			}
		}()
	}
	for time.Now().Before(deadline) && ctx.Err() == nil {
		all := true
		for i, db := range h.nodeDBList() {
			if settled[i] {
				continue
			}
			cursor, id, cv, msg, err := haltOf(ctx, db)
			if err != nil {
				all = false
				continue
			}
			if !detected[i] && id == inj.id && cv == inj.cv && inj.kind == ForgedSwapped && !strings.Contains(msg, wantHalt[inj.kind]) {
				// A first poll that ended before the missing event says
				// only chain-gap; the retry polls both. Wait 10s for it.
				if firstSeen[i].IsZero() {
					firstSeen[i] = time.Now()
				}
				if time.Since(firstSeen[i]) < 10*time.Second {
					all = false
					continue
				}
			}
			if !detected[i] && id == inj.id && cv == inj.cv {
				detected[i] = true
				h.mu.Lock()
				if inj.kind == ForgedDropped && strings.Contains(msg, wantHalt[ForgedSwapped]) {
					h.rep.problem("node%d halted at dropped %s@%d with %q: a drop reported as a reorder", i+1, inj.id, inj.cv, msg)
				} else if strings.Contains(msg, wantHalt[inj.kind]) {
					h.rep.Detected[inj.kind]++
				} else {
					h.rep.problem("node%d halted at %s %s@%d with %q, want an error containing %q", i+1, inj.kind, inj.id, inj.cv, msg, wantHalt[inj.kind])
				}
				h.mu.Unlock()
			}
			if inj.kind == ForgedReplay {
				if id == inj.id && cv == inj.cv {
					h.mu.Lock()
					h.rep.problem("node%d halted at a replay of applied event %s@%d: %q (want it passed as a duplicate)", i+1, inj.id, inj.cv, msg)
					h.mu.Unlock()
					applier.SkipSecurityHalt(ctx, db, inj.id) // keep the run going
				}
				if cursor >= inj.cv {
					settled[i] = true
					h.mu.Lock()
					h.rep.Detected[inj.kind]++ // passed, nothing applied: the checker's first-copy rule
					h.mu.Unlock()
					continue
				}
				all = false
				continue
			}
			if cursor >= inj.cv {
				if !detected[i] {
					h.mu.Lock()
					h.rep.problem("node%d moved past %s %s@%d without halting (fault not detected)", i+1, inj.kind, inj.id, inj.cv)
					h.mu.Unlock()
				}
				settled[i] = true
				continue
			}
			all = false
			if detected[i] && !skipped[i] && inj.kind != BadMissing && inj.kind != BadCorrupt && inj.fix == nil {
				// Skip kinds: the operator skips on each node as it halts;
				// every fifth injection uses the controlfeed binary.
				var err error
				if isForged(inj.kind) {
					err = h.overrideSecurity(ctx, i, db, inj)
				} else if inj.cv%5 == 0 {
					cmd := exec.CommandContext(ctx, h.cfg.Binary, "skip", "--db", h.nodeDBs[i], inj.id)
					cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
					out, xerr := cmd.CombinedOutput()
					if xerr != nil {
						err = fmt.Errorf("controlfeed skip: %v: %s", xerr, out)
					}
				} else {
					err = applier.Skip(ctx, db, inj.id)
				}
				if err != nil && !errors.Is(err, applier.ErrNotHalted) {
					h.mu.Lock()
					h.rep.problem("skip %s %s@%d on node%d: %v", inj.kind, inj.id, inj.cv, i+1, err)
					h.mu.Unlock()
					applier.Skip(ctx, db, inj.id) // keep the run going
				} else if err == nil {
					skipped[i] = true
					h.mu.Lock()
					h.rep.Skips++
					h.mu.Unlock()
				}
			}
		}
		if all {
			return
		}
		if inj.fix != nil && !inj.fix.done && allSeen(detected, settled) {
			// The operator's repair of a dropped or swapped injection,
			// once every node has halted at it (docs/SECURITY.md).
			if repairErr = h.repairStream(ctx, inj.fix); repairErr == nil {
				h.mu.Lock()
				h.rep.StreamRepairs++
				h.mu.Unlock()
			}
		}
		if inj.value != nil && allTrue(detected) {
			// A repair that failed (the Object Store's broker is down) is
			// tried again on the next round, until the deadline.
			if repairErr = h.repair(ctx, inj); repairErr == nil {
				inj.value = nil // repaired; now just wait for the nodes to pass it
				h.mu.Lock()
				h.rep.Repairs++
				h.mu.Unlock()
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ctx.Err() == nil {
		h.mu.Lock()
		h.rep.problem("%s %s@%d not resolved on every node within 2m (detected %v, settled %v)", inj.kind, inj.id, inj.cv, detected, settled)
		if repairErr != nil {
			h.rep.problem("repair %s %s@%d: %v", inj.kind, inj.id, inj.cv, repairErr)
		}
		h.mu.Unlock()
	}
}

// allSeen reports whether every node either halted at the injection or
// moved past it (a problem already recorded).
func allSeen(detected, settled []bool) bool {
	for i := range detected {
		if !detected[i] && !settled[i] {
			return false
		}
	}
	return true
}

func allTrue(b []bool) bool {
	for _, v := range b {
		if !v {
			return false
		}
	}
	return true
}

// repair puts the right bytes back for an artifact kind. The value every
// node must end up with is recorded when the event is injected
// (badInputs), not here.
func (h *harness) repair(ctx context.Context, inj injection) error {
	sum := sha256.Sum256(inj.value)
	ref := controlevent.ChecksumPrefix + hex.EncodeToString(sum[:])
	if inj.kind == BadCorrupt && h.obj == nil {
		if p, err := h.store.Path(ref); err == nil {
			os.Remove(p)
		}
	} // the Object Store's Put finds and replaces a corrupt object itself
	h.storeMu.Lock()
	_, err := artifact.PutBytes(ctx, h.arts(), inj.value)
	h.storeMu.Unlock()
	if err != nil {
		return fmt.Errorf("put %s: %w", ref, err)
	}
	return nil
}

// diskFull runs one disk-full episode on the last node at a third of the
// fault phase: fill its tmpfs (or enable applier.before-commit=enospc), wait
// until /healthz says 503, give the space back, wait until it applies again
// and is healthy.
func (h *harness) diskFull(ctx context.Context) {
	sleepCtx(ctx, h.cfg.Duration/3)
	if ctx.Err() != nil {
		return
	}
	i := len(h.nodes) - 1
	p := h.nodes[i]
	// No harness kill, stall or duplicate-name episode while the node is
	// out of space, and no failure points of its own: a node that retries
	// a large batch passes applier.mid-batch once per event and dies there
	// before its unavailable grace runs out, again and again, so it would
	// never get to say 503 (it restarts now, without them).
	for !h.claimQuiet(i) {
		if sleepCtx(ctx, time.Second); ctx.Err() != nil {
			return
		}
	}
	defer func() {
		h.mu.Lock()
		h.protect[i]--
		h.quiet[i] = false // its next start has failure points again
		h.mu.Unlock()
	}()
	var filler string
	how := "tmpfs"
	if h.tmpfs == "" {
		how = "failpoint " + failpoint.ApplierBeforeCommit + "=enospc"
		h.mu.Lock()
		h.nodeFP[i] = failpoint.ApplierBeforeCommit + "=enospc"
		h.mu.Unlock()
	}
	// Restart it (with the space still there, so that it starts) and wait
	// until it answers.
	p.killAndWait()
	waitFor(ctx, 30*time.Second, func() bool { return h.healthz(i) != 0 })
	if h.tmpfs != "" {
		filler = filepath.Join(h.tmpfs, "filler")
		f, err := os.Create(filler)
		if err == nil {
			buf := make([]byte, 1<<20)
			for {
				if _, err := f.Write(buf); err != nil {
					break
				}
			}
			f.Sync()
			f.Close()
		}
	}
	before, _ := applier.ReadCursor(ctx, h.nodeDB(i))
	starts := p.startCount()
	unhealthy := waitFor(ctx, 60*time.Second, func() bool { return h.healthz(i) == 503 })
	restarts := p.startCount() - starts
	// Give the space back.
	if filler != "" {
		os.Remove(filler)
	} else {
		h.mu.Lock()
		delete(h.nodeFP, i)
		h.mu.Unlock()
		p.signal(syscall.SIGKILL) // the point is read at start: restart without it
	}
	resumed := waitFor(ctx, 90*time.Second, func() bool {
		c, err := applier.ReadCursor(ctx, h.nodeDB(i))
		return err == nil && c > before && h.healthz(i) == 200
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rep.DiskFull = fmt.Sprintf("%s on %s: unhealthy (503) observed %v (%d restarts while waiting for it), resumed and healthy %v", how, p.name, unhealthy, restarts, resumed)
	if !unhealthy || !resumed {
		h.rep.problem("disk full: %s", h.rep.DiskFull)
	}
}

// claimQuiet protects node i (no harness kill, stall, wipe or
// duplicate-name episode) and makes its next start run without failure
// points, unless another episode holds it; it reports whether it did.
func (h *harness) claimQuiet(i int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.protect[i] > 0 || h.stopped[i] {
		return false
	}
	h.protect[i]++
	h.quiet[i] = true
	return true
}

func waitFor(ctx context.Context, d time.Duration, f func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if f() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// storedEvent reads the event the stream holds at seq.
func (h *harness) storedEvent(ctx context.Context, seq uint64) (controlevent.Event, error) {
	st, err := h.js.Stream(ctx, natsfeed.DefaultStream)
	if err != nil {
		return controlevent.Event{}, err
	}
	m, err := st.GetMsg(ctx, seq)
	if err != nil {
		return controlevent.Event{}, err
	}
	return controlevent.Decode(m.Data)
}

// corruptArtifact stores value under ref and overwrites the object's bytes,
// while the store is not full (storeMu).
func (h *harness) corruptArtifact(ctx context.Context, ref string, value []byte) error {
	h.storeMu.Lock()
	defer h.storeMu.Unlock()
	if h.obj != nil {
		return h.corruptObject(ctx, ref)
	}
	if _, err := artifact.PutBytes(ctx, h.store, value); err != nil {
		return err
	}
	p, err := h.store.Path(ref)
	if err != nil {
		return err
	}
	os.Chmod(p, 0o644)
	return os.WriteFile(p, []byte("corrupted by the chaos harness"), 0o644)
}
