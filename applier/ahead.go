package applier

import (
	"context"
	"fmt"
	"sync"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/trust"
)

// aheadBudget bounds the payload bytes fetched ahead for the next batch,
// on top of the current batch's prefetchBudget.
const aheadBudget = prefetchBudget / 4

// ahead is a background fetch of the next batch's payloads, started while
// the current batch's transaction runs, so that artifact reads (file opens,
// network round trips, sha256) overlap the SQL work instead of following it.
// Payloads are kept only if verified against the event's checksum; a failed
// fetch is simply not kept (the next batch fetches that event again and
// halts on it if it still fails).
type ahead struct {
	done chan struct{}
	got  map[uint64]aheadPayload // by ControlVersion; written before done closes
}

type aheadPayload struct {
	ref, checksum string
	payload       []byte
}

// startAhead fetches, in the background, the payloads of up to MaxBatch of
// evs, in order, fetchWorkers at a time, until aheadBudget bytes are held or
// ctx is done.
func (a *Applier) startAhead(ctx context.Context, evs []controlevent.Event) *ahead {
	var todo []controlevent.Event
	for _, ev := range evs {
		if len(todo) >= a.cfg.MaxBatch {
			break
		}
		if ev.ArtifactRef != "" && ev.Checksum != "" {
			todo = append(todo, ev)
		}
	}
	if len(todo) == 0 || a.store == nil {
		return nil
	}
	ah := &ahead{done: make(chan struct{}), got: make(map[uint64]aheadPayload, len(todo))}
	go func() {
		defer close(ah.done)
		var bytes int64
		for len(todo) > 0 && ctx.Err() == nil && bytes < aheadBudget {
			wave := todo[:min(fetchWorkers, len(todo))]
			todo = todo[len(wave):]
			res := make([][]byte, len(wave))
			ok := make([]bool, len(wave))
			var wg sync.WaitGroup
			for i, ev := range wave {
				wg.Go(func() {
					p, err := a.fetch(ctx, ev)
					res[i], ok[i] = p, err == nil
				})
			}
			wg.Wait()
			for i, ev := range wave {
				if !ok[i] {
					return // keep order simple: stop at the first failure
				}
				ah.got[ev.ControlVersion] = aheadPayload{ev.ArtifactRef, ev.Checksum, res[i]}
				bytes += int64(len(res[i]))
			}
		}
	}()
	return ah
}

// take waits for the background fetch to end and fills the payloads of
// plan's items that it fetched for the same artifact and checksum, marking
// them fetched.
func (ah *ahead) take(plan []item) {
	<-ah.done
	for i := range plan {
		it := &plan[i]
		if !it.fetch {
			continue
		}
		if p, ok := ah.got[it.ev.ControlVersion]; ok && p.ref == it.ev.ArtifactRef && p.checksum == it.ev.Checksum {
			it.payload, it.fetch = p.payload, false
		}
	}
}

// pollAhead is a Poll of the events after the batch being committed, made
// in the background while its transaction runs, when the last Poll was full
// (the node is catching up on a backlog). The Source is still called by one
// goroutine at a time: apply waits for the Poll to return (wait) before it
// acknowledges the batch, and before it returns. Its result is used only if
// the batch commits whole, so that the cursor ends exactly at after;
// otherwise, and on a Poll error, it is dropped and the next Step polls
// again (reporting the error then).
type pollAhead struct {
	after uint64
	done  chan struct{}
	// Written before done closes.
	evs  []controlevent.Event
	err  error
	next *ahead // payloads of evs' first batch, being fetched
	// checked holds the signature checks of evs (one per event) made with
	// ring (trust.Keyring.VerifyAll), when ring is not nil.
	checked []trust.Result
	ring    *trust.Keyring
}

// startPollAhead polls the Source after the control version after in the
// background and starts fetching the first batch's payloads. With a
// keyring (signed feeds) it also checks the signatures and chain links of
// all the events it polled (the batches after the first reuse them), which
// depend on the events and the keys only, so that this CPU work overlaps
// the commit of the batch before; apply uses the checks only if the keyring
// of its round is still ring.
func (a *Applier) startPollAhead(ctx context.Context, after uint64, ring *trust.Keyring) *pollAhead {
	pa := &pollAhead{after: after, done: make(chan struct{}), ring: ring}
	go func() {
		defer close(pa.done)
		pa.err = a.call(ctx, func() string { return fmt.Sprintf("poll of feed %s after %d", a.src.Name(), after) }, func(ctx context.Context) (err error) {
			pa.evs, err = a.src.Poll(ctx, after)
			return err
		})
		if pa.err == nil && len(pa.evs) > 0 {
			pa.next = a.startAhead(ctx, pa.evs)
			if ring != nil {
				pa.checked = ring.VerifyAll(pa.evs)
			}
		}
	}()
	return pa
}

// wait returns when the background Poll has returned. It may be called
// more than once.
func (pa *pollAhead) wait() { <-pa.done }
