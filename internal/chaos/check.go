package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/kv"
	"github.com/controlfeed/controlfeed/outbox"
)

// streamEvent is one message of the stream.
type streamEvent struct {
	seq uint64
	id  string
}

// readStream returns every message of the feed stream, in sequence order.
//
// A read that fails for a cause of the broker (no responders while a
// cluster elects a stream leader, a timeout, a fetch that returned
// nothing) is started again, every second, within the two minutes; a
// message that does not decode fails at once.
func (h *harness) readStream(ctx context.Context) ([]streamEvent, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if h.fsrc != nil {
		return h.readFeedDir(cctx)
	}
	for attempt := 1; ; attempt++ {
		out, err := h.readStreamOnce(cctx)
		var bad *badMessageError
		if err == nil || errors.As(err, &bad) {
			return out, err
		}
		if cctx.Err() != nil {
			return nil, fmt.Errorf("%w (attempt %d, the last within the check's two minutes)", err, attempt)
		}
		if h.logf != nil {
			h.logf("check: read of the stream failed (attempt %d), reading again: %v", attempt, err)
		}
		select {
		case <-cctx.Done():
			return nil, fmt.Errorf("%w (after %d attempts)", err, attempt)
		case <-time.After(time.Second):
		}
	}
}

// badMessageError is a stream message the checker cannot decode.
type badMessageError struct {
	seq uint64
	err error
}

func (e *badMessageError) Error() string { return fmt.Sprintf("stream message %d: %v", e.seq, e.err) }
func (e *badMessageError) Unwrap() error { return e.err }

// readStreamOnce reads the whole stream through one ordered consumer.
func (h *harness) readStreamOnce(cctx context.Context) ([]streamEvent, error) {
	st, err := h.js.Stream(cctx, natsfeed.DefaultStream)
	if err != nil {
		return nil, err
	}
	last := st.CachedInfo().State.LastSeq
	if last == 0 {
		return nil, nil
	}
	cons, err := st.OrderedConsumer(cctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	defer func() {
		// Best effort: a failed attempt's consumer would otherwise stay on
		// the stream until its inactivity threshold.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(cctx), 2*time.Second)
		defer cancel()
		if ci := cons.CachedInfo(); ci != nil {
			st.DeleteConsumer(dctx, ci.Name)
		}
	}()
	var out []streamEvent
	for len(out) == 0 || out[len(out)-1].seq < last {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			e, err := controlevent.Decode(m.Data())
			if err != nil {
				return nil, &badMessageError{md.Sequence.Stream, err}
			}
			out = append(out, streamEvent{seq: md.Sequence.Stream, id: e.EventID})
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, err
		}
		if n == 0 {
			return nil, fmt.Errorf("stream read stalled at %d of %d messages", len(out), last)
		}
	}
	return out, nil
}

type appliedRow struct {
	id      string
	cv      uint64
	outcome string
}

// check proves, for every node: every producer change was applied (none
// lost), none twice and in ControlVersion order, the cursor is at the
// stream's head, the state equals the producer's (plus the repaired
// injected keys), and every skip and conflict is one the harness caused.
func (h *harness) check(ctx context.Context) error {
	r := h.rep
	// The producer: every change published.
	rows, err := h.producer().QueryContext(ctx, `SELECT event_id, published_control_version IS NOT NULL FROM controlfeed_outbox ORDER BY id`)
	if err != nil {
		return err
	}
	var prodIDs []string
	unpublished := 0
	for rows.Next() {
		var id string
		var pub bool
		if err := rows.Scan(&id, &pub); err != nil {
			rows.Close()
			return err
		}
		prodIDs = append(prodIDs, id)
		if !pub {
			unpublished++
		}
	}
	rows.Close()
	r.Events = len(prodIDs)
	if unpublished > 0 {
		r.Lost += unpublished
		r.problem("producer: %d outbox rows never published", unpublished)
	}
	if oc, err := outbox.ReadCounts(ctx, h.producer()); err == nil && oc.Dead > 0 {
		r.problem("producer: %d dead outbox rows", oc.Dead)
	}

	// The stream: first occurrence of each EventID, duplicates counted.
	stream, err := h.readStream(ctx)
	if err != nil {
		return fmt.Errorf("read the stream: %w", err)
	}
	if len(stream) > 0 {
		r.StreamMessages = stream[len(stream)-1].seq
	}
	first := map[string]uint64{}
	for _, m := range stream {
		if _, ok := first[m.id]; ok {
			if !h.forced[m.seq] && !h.isInjected(m.id, m.seq) {
				r.PumpDuplicates++
			}
			continue
		}
		first[m.id] = m.seq
	}
	// Feed order = outbox order: the first copies of the producer's events
	// ascend in outbox order (a reconnect during a pipelined batch must not
	// store a later event first).
	var prevSeq uint64
	var prevID string
	for _, id := range prodIDs {
		seq, ok := first[id]
		if !ok {
			continue
		}
		if seq < prevSeq {
			r.OutOfOrder++
			r.problem("stream: producer event %s stored at sequence %d, before the earlier outbox row %s at %d", id, seq, prevID, prevSeq)
		}
		prevSeq, prevID = seq, id
	}
	prodSet := map[string]bool{}
	for _, id := range prodIDs {
		prodSet[id] = true
		if _, ok := first[id]; !ok {
			r.Lost++
			r.problem("producer event %s is not in the stream", id)
		}
	}
	injectedByID := map[string]injection{}
	for _, inj := range h.injected {
		// A conflict and a replay reuse a producer's EventID: the producer's
		// checks cover them (its first copy is the one applied).
		// So do the producer's own events a hostile broker dropped or
		// swapped.
		if inj.kind != BadConflict && inj.kind != ForgedReplay && inj.fix == nil {
			injectedByID[inj.id] = inj
		}
	}
	for id := range first {
		if !prodSet[id] {
			if _, ok := injectedByID[id]; !ok {
				r.problem("stream holds event %s that neither the producer nor the harness wrote", id)
			}
		}
	}
	prodKV, err := kv.List(ctx, h.producer())
	if err != nil {
		return err
	}
	conflictsInjected := r.BadInputs[BadConflict]
	h.checkHalts()

	for i, db := range h.nodeDBList() {
		name := fmt.Sprintf("node%d", i+1)
		rows, err := db.QueryContext(ctx, `SELECT event_id, control_version, outcome FROM controlfeed_applied_events ORDER BY rowid`)
		if err != nil {
			return err
		}
		var applied []appliedRow
		for rows.Next() {
			var a appliedRow
			var cv int64
			if err := rows.Scan(&a.id, &cv, &a.outcome); err != nil {
				rows.Close()
				return err
			}
			a.cv = uint64(cv)
			applied = append(applied, a)
		}
		rows.Close()
		byID := map[string]appliedRow{}
		var prev uint64
		for _, a := range applied {
			if a.cv <= prev {
				r.OutOfOrder++
				r.problem("%s: %s recorded at control version %d after %d", name, a.id, a.cv, prev)
			}
			prev = a.cv
			if _, dup := byID[a.id]; dup {
				r.DoubleApplied++
				r.problem("%s: %s recorded twice", name, a.id)
			}
			byID[a.id] = a
			if f, ok := first[a.id]; !ok || f != a.cv {
				r.DoubleApplied++
				r.problem("%s: %s applied from stream sequence %d, but its first copy is %d (a duplicate was applied)", name, a.id, a.cv, f)
			}
			if a.outcome == "skipped" {
				if _, ok := injectedByID[a.id]; !ok {
					r.problem("%s: event %s was skipped, but the harness skipped no such event", name, a.id)
				}
			}
		}
		for _, id := range prodIDs {
			if a, ok := byID[id]; !ok || a.outcome != "applied" {
				r.Lost++
				r.problem("%s: producer event %s not applied (outcome %q)", name, id, a.outcome)
			}
		}
		for id, inj := range injectedByID {
			a, ok := byID[id]
			want := "skipped"
			if inj.kind == BadMissing || inj.kind == BadCorrupt {
				want = "applied"
			}
			if !ok || a.outcome != want {
				r.problem("%s: injected %s %s has outcome %q, want %q", name, inj.kind, id, a.outcome, want)
			}
		}
		st, err := applier.ReadStatus(ctx, db)
		if err != nil {
			return err
		}
		if st.Cursor != r.StreamMessages {
			r.CursorOff++
			r.problem("%s: cursor %d, stream head %d", name, st.Cursor, r.StreamMessages)
		}
		if st.Halted != nil {
			r.problem("%s: still halted at %s: %s", name, st.Halted.EventID, st.Halted.Error)
		}
		r.Conflicts += st.Conflicts
		if int(st.Conflicts) != conflictsInjected {
			r.problem("%s: %d conflicts recorded, %d injected", name, st.Conflicts, conflictsInjected)
		}
		var unresolved int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM controlfeed_conflicts WHERE resolution = ''`).Scan(&unresolved); err == nil && unresolved > 0 {
			r.problem("%s: %d conflicts unresolved", name, unresolved)
		}
		// State: the producer's keys, plus the repaired injected keys.
		nodeKV, err := kv.List(ctx, db)
		if err != nil {
			return err
		}
		got := map[string]kv.Entry{}
		for _, e := range nodeKV {
			got[e.Key] = e
		}
		diffs := 0
		var differ []string // the first few keys that differ, for the problem line
		note := func(k, why string) {
			diffs++
			if len(differ) < 5 {
				differ = append(differ, fmt.Sprintf("%q (%s)", k, why))
			}
		}
		for _, e := range prodKV {
			g, ok := got[e.Key]
			if !ok {
				note(e.Key, "missing")
			} else if !bytes.Equal(g.Value, e.Value) || g.Version != e.Version || !g.UpdatedAt.Equal(e.UpdatedAt) {
				note(e.Key, fmt.Sprintf("value %q v%d, producer's %q v%d", trunc(g.Value), g.Version, trunc(e.Value), e.Version))
			}
			delete(got, e.Key)
		}
		for k, v := range r.expected {
			g, ok := got[k]
			if !ok {
				note(k, "injected key missing")
			} else if !bytes.Equal(g.Value, v) {
				note(k, fmt.Sprintf("value %q, injected %q", trunc(g.Value), trunc(v)))
			}
			delete(got, k)
		}
		for k := range got {
			note(k, "not in the producer's state")
			if strings.HasPrefix(k, "chaos-conflict/") {
				r.problem("%s: the conflicting copy for key %s was applied", name, k)
			}
		}
		if diffs > 0 {
			r.StateDiffs += diffs
			r.problem("%s: %d keys differ from the producer's state: %s", name, diffs, strings.Join(differ, ", "))
		}
		if len(r.expected) == 0 {
			pd, err1 := kv.Digest(ctx, h.producer())
			nd, err2 := kv.Digest(ctx, db)
			if err1 != nil || err2 != nil || pd != nd {
				r.problem("%s: kv digest %s, producer's %s (%v %v)", name, nd, pd, err1, err2)
			}
		}
	}
	return nil
}

func (h *harness) isInjected(id string, seq uint64) bool {
	_, ok := h.injected[fmt.Sprintf("%s@%d", id, seq)]
	return ok
}

// trunc shortens a value for a problem line.
func trunc(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}
