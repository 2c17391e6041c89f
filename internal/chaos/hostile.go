package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
)

// The hostile broker of a signed run: the producer's own signed events,
// which the broker holds back from the nodes (it pauses their consumers)
// and then deletes (ForgedDropped) or delivers in the other order
// (ForgedSwapped). Nothing in them is forged, so only the chain can tell:
// every node must halt with chain-gap at the first event it gets out of
// chain order, apply nothing of it, and resume after the operator's
// repair of docs/SECURITY.md (stop the pump, delete the out-of-chain copy,
// re-append the missing events and then that one, in chain order, from a
// copy that holds them; restart the pump), with nothing lost.
//
// The harness keeps the bytes it deletes: it plays the copy the operator
// repairs from (a backup or a mirror of the stream) as well as the broker.
const (
	// ForgedDropped: of the producer's last two events in the stream,
	// the first is deleted; the nodes halt at the second (chain-gap).
	ForgedDropped = "dropped"
	// ForgedSwapped: the producer's last two events in the stream are
	// deleted and appended again in the other order; the nodes halt at the
	// later event, now delivered first (chain-gap).
	ForgedSwapped = "swapped"
)

// tailMsg is one message of the stream's tail as the hostile broker sees
// it: its position, its event, its chain seq (0 if its signature does not
// verify) and whether it is a first delivery of a producer event no node
// has recorded.
type tailMsg struct {
	seq   uint64
	ev    controlevent.Event
	link  uint64
	fresh bool
}

// lastPair returns the indexes in tail of the producer's last two events,
// if they are fresh and consecutive in the chain (the later one at the
// later position): the pair a hostile broker drops or swaps. Anything else
// in the tail (a forced duplicate, a forged event) is left alone.
func lastPair(tail []tailMsg) (a, b int, ok bool) {
	a, b = -1, -1
	for i, m := range tail {
		if m.link == 0 {
			continue
		}
		switch {
		case b < 0 || m.link > tail[b].link:
			a, b = b, i
		case a < 0 || m.link > tail[a].link:
			a = i
		}
	}
	if a < 0 || !tail[a].fresh || !tail[b].fresh || tail[a].link+1 != tail[b].link || tail[a].seq >= tail[b].seq {
		return 0, 0, false
	}
	return a, b, true
}

// streamFix is the operator's repair of a dropped or swapped injection:
// delete the copy the nodes halted at, then append these events in order.
type streamFix struct {
	id       string // the event the nodes halted at
	halted   uint64
	reappend []controlevent.Event
	done     bool
	release  func() // restarts the pump (once)
}

// injectHostile withholds, then drops or swaps, the producer's last two
// events. On success the pump is left stopped (the operator's repair
// restarts it; see resolve).
func (h *harness) injectHostile(ctx context.Context, kind string) (injection, error) {
	inj := injection{kind: kind}
	durables := make([]string, len(h.nodes))
	for i, p := range h.nodes {
		durables[i] = natsfeed.DurableName(p.name)
	}
	h.pumpMu.Lock() // no power loss restarting the pump meanwhile
	stopped := false
	release := func() {
		if stopped {
			h.pump.resume()
			h.mu.Lock()
			h.protect[-1]--
			h.mu.Unlock()
			stopped = false
		}
		h.pumpMu.Unlock()
	}
	ok := false
	defer func() {
		if !ok {
			release()
		}
	}()

	h.brokerMu.Lock() // no broker restart or stall while the nodes' consumers are paused
	defer h.brokerMu.Unlock()
	var paused []string
	defer func() {
		for _, d := range paused {
			h.resumeConsumer(ctx, d)
		}
	}()
	var delivered uint64
	for _, d := range durables {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := h.js.PauseConsumer(cctx, natsfeed.DefaultStream, d, time.Now().Add(time.Minute))
		cancel()
		if err != nil {
			return inj, fmt.Errorf("pause consumer %s: %w", d, err)
		}
		paused = append(paused, d)
	}
	// Paused, the consumers deliver nothing more: what each delivered so
	// far is final, and nothing after it can reach a node.
	for _, d := range durables {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		c, err := h.js.Consumer(cctx, natsfeed.DefaultStream, d)
		cancel()
		if err != nil {
			return inj, fmt.Errorf("consumer %s: %w", d, err)
		}
		delivered = max(delivered, c.CachedInfo().Delivered.Stream)
	}
	// Let the pump publish two more, then stop it: the tail is final.
	if !waitFor(ctx, 10*time.Second, func() bool {
		hd, err := h.head(ctx)
		return err == nil && hd >= delivered+2
	}) {
		return inj, fmt.Errorf("the pump published fewer than 2 events past %d within 10s", delivered)
	}
	h.mu.Lock()
	h.protect[-1]++ // no pump stall or random kill
	h.mu.Unlock()
	stopped = true
	if !h.pump.stop() {
		return inj, fmt.Errorf("the pump (pid %d) is not stopped 2s after SIGSTOP", h.pump.pid())
	}
	time.Sleep(300 * time.Millisecond) // publishes already sent are stored meanwhile

	// The tail must be final: the same pair on two reads 500ms apart.
	var tail []tailMsg
	var a, b int
	for try := 0; ; try++ {
		t1, err := h.readTail(ctx, delivered)
		if err != nil {
			return inj, err
		}
		a1, b1, found := lastPair(t1)
		if !found {
			return inj, fmt.Errorf("no two fresh consecutive producer events in the stream's tail after %d (%d messages)", delivered, len(t1))
		}
		time.Sleep(500 * time.Millisecond)
		if tail, err = h.readTail(ctx, delivered); err != nil {
			return inj, err
		}
		var ok2 bool
		a, b, ok2 = lastPair(tail)
		if ok2 && tail[a].seq == t1[a1].seq && tail[b].seq == t1[b1].seq {
			break
		}
		if try == 3 {
			return inj, fmt.Errorf("the stream's tail after %d keeps changing with the pump stopped", delivered)
		}
	}
	ea, eb := tail[a], tail[b]
	h.mu.Lock()
	h.hostile[ea.ev.EventID], h.hostile[eb.ev.EventID] = true, true
	h.mu.Unlock()
	fix := &streamFix{id: eb.ev.EventID}
	switch kind {
	case ForgedDropped:
		if err := h.deleteMsg(ctx, ea.seq); err != nil {
			return inj, err
		}
		inj.id, inj.cv = eb.ev.EventID, eb.seq
		fix.reappend = []controlevent.Event{ea.ev, eb.ev}
	case ForgedSwapped:
		for _, s := range []uint64{ea.seq, eb.seq} {
			if err := h.deleteMsg(ctx, s); err != nil {
				return inj, err
			}
		}
		x, err := h.appendExactlyOnce(ctx, eb.ev)
		if err == nil {
			_, err = h.appendExactlyOnce(ctx, ea.ev)
		}
		if err != nil {
			return inj, fmt.Errorf("swapped: %w (events %s and %s were deleted and are lost from the stream)", err, ea.ev.EventID, eb.ev.EventID)
		}
		inj.id, inj.cv = eb.ev.EventID, x
		fix.reappend = []controlevent.Event{eb.ev}
	default:
		return inj, fmt.Errorf("hostile kind %q", kind)
	}
	fix.halted, fix.release = inj.cv, release
	inj.fix = fix
	ok = true
	h.logf("hostile broker: %s: producer events %s (chain seq %d, at %d) and %s (%d, at %d); nodes must halt at %s@%d",
		kind, ea.ev.EventID, ea.link, ea.seq, eb.ev.EventID, eb.link, eb.seq, inj.id, inj.cv)
	return inj, nil
}

// readTail reads the stream's messages after seq, with their chain seqs
// and whether each is a fresh producer event.
func (h *harness) readTail(ctx context.Context, after uint64) ([]tailMsg, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := h.js.Stream(cctx, natsfeed.DefaultStream)
	if err != nil {
		return nil, err
	}
	var tail []tailMsg
	for seq := after + 1; seq <= st.CachedInfo().State.LastSeq; seq++ {
		m, err := st.GetMsg(cctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read stream message %d: %w", seq, err)
		}
		e, err := controlevent.Decode(m.Data)
		if err != nil {
			continue // not an event: nothing to drop or swap
		}
		e.ControlVersion = seq
		t := tailMsg{seq: seq, ev: e}
		if v, err := h.ring.Verify(e); err == nil {
			t.link = v.Link.Seq
		}
		if t.fresh, err = h.freshProducerEvent(cctx, e.EventID, seq); err != nil {
			return nil, err
		}
		tail = append(tail, t)
	}
	return tail, nil
}

// freshProducerEvent reports whether id at stream position seq is the
// first copy of an outbox row (not written back yet, or written back at
// seq) that no node has recorded.
func (h *harness) freshProducerEvent(ctx context.Context, id string, seq uint64) (bool, error) {
	var n int
	if err := h.producer().QueryRowContext(ctx, `SELECT COUNT(*) FROM controlfeed_outbox WHERE event_id = ?
		AND (published_control_version IS NULL OR published_control_version = ?)`, id, int64(seq)).Scan(&n); err != nil {
		return false, fmt.Errorf("look up %s in the outbox: %w", id, err)
	}
	if n == 0 {
		return false, nil
	}
	for i, db := range h.nodeDBList() {
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM controlfeed_applied_events WHERE event_id = ?`, id).Scan(&n); err != nil {
			return false, fmt.Errorf("look up %s on node%d: %w", id, i+1, err)
		}
		if n > 0 {
			return false, nil
		}
	}
	return true, nil
}

// repairStream is the operator's action for a dropped or swapped
// injection, once every node halted at it: delete the copy the nodes
// halted at and every later copy of that event (a pump retry past the
// duplicate window may have stored one), append the events of the fix in
// chain order, restart the pump. It may be called again after an error; it
// does the rest.
func (h *harness) repairStream(ctx context.Context, fix *streamFix) error {
	if fix.halted != 0 {
		copies, err := h.copiesFrom(ctx, fix.halted, fix.id)
		if err != nil {
			return err
		}
		for _, s := range copies {
			if err := h.deleteMsg(ctx, s); err != nil {
				return err
			}
		}
		fix.halted = 0
	}
	for len(fix.reappend) > 0 {
		if _, err := h.appendExactlyOnce(ctx, fix.reappend[0]); err != nil {
			return err
		}
		fix.reappend = fix.reappend[1:]
	}
	fix.done = true
	fix.release()
	fix.release = func() {}
	return nil
}

// copiesFrom returns the positions from seq on that hold event id.
func (h *harness) copiesFrom(ctx context.Context, seq uint64, id string) ([]uint64, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := h.js.Stream(cctx, natsfeed.DefaultStream)
	if err != nil {
		return nil, fmt.Errorf("find the copies of %s: %w", id, err)
	}
	var out []uint64
	for s := seq; s <= st.CachedInfo().State.LastSeq; s++ {
		m, err := st.GetMsg(cctx, s)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("find the copies of %s: read %d: %w", id, s, err)
		}
		if e, err := controlevent.Decode(m.Data); err == nil && e.EventID == id {
			out = append(out, s)
		}
	}
	return out, nil
}

// deleteMsg deletes stream message seq, retrying for up to 30s (a message
// already gone is deleted).
func (h *harness) deleteMsg(ctx context.Context, seq uint64) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := func() error {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			st, err := h.js.Stream(cctx, natsfeed.DefaultStream)
			if err != nil {
				return err
			}
			if err = st.DeleteMsg(cctx, seq); err != nil {
				if _, gerr := st.GetMsg(cctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
					return nil
				}
			}
			return err
		}()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("delete stream message %d: %w", seq, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// appendExactlyOnce appends e's wire form at the stream's end with no
// Msg-Id (as a broker stores what it likes) and returns its position. Each
// try expects the last sequence it read, and a retry first looks for the
// bytes after the position the first try expected, so an unknown outcome
// never stores e twice. Retried for up to 30s.
func (h *harness) appendExactlyOnce(ctx context.Context, e controlevent.Event) (uint64, error) {
	e.ControlVersion = 0
	body, err := controlevent.Marshal(e)
	if err != nil {
		return 0, err
	}
	deadline := time.Now().Add(30 * time.Second)
	var base uint64 // the last sequence before the first try, once read
	for try := 0; ; try++ {
		seq, err := func() (uint64, error) {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			st, err := h.js.Stream(cctx, natsfeed.DefaultStream)
			if err != nil {
				return 0, err
			}
			last := st.CachedInfo().State.LastSeq
			if try == 0 || base == 0 {
				base = last
			} else {
				for s := base + 1; s <= last; s++ {
					m, err := st.GetMsg(cctx, s)
					if errors.Is(err, jetstream.ErrMsgNotFound) {
						continue
					}
					if err != nil {
						return 0, err
					}
					if bytes.Equal(m.Data, body) {
						return s, nil // an earlier try was stored
					}
				}
			}
			ack, err := h.js.PublishMsg(cctx, &nats.Msg{Subject: natsfeed.DefaultSubject, Data: body, Header: nats.Header{}},
				jetstream.WithExpectStream(natsfeed.DefaultStream), jetstream.WithExpectLastSequence(last))
			if err != nil {
				return 0, err
			}
			return ack.Sequence, nil
		}()
		if err == nil {
			return seq, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0, fmt.Errorf("append %s to the stream: %w", e.EventID, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// resumeConsumer resumes a paused node consumer, retrying for up to 30s
// (the pause also ends by itself after a minute).
func (h *harness) resumeConsumer(ctx context.Context, durable string) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := h.js.ResumeConsumer(cctx, natsfeed.DefaultStream, durable)
		cancel()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			if err != nil {
				h.logf("hostile broker: resume consumer %s: %v (it resumes by itself when the pause ends)", durable, err)
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}
