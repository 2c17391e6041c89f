package applier

import (
	"context"
	"sync"

	"github.com/controlfeed/controlfeed/controlevent"
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
