package demo

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/controlfeed/controlfeed/internal/node"
)

// progress shows the producer's and every node's advance on Options.Progress:
// bars when Options.Bars, else one line per second.
type progress struct {
	w      io.Writer
	total  int64
	fleet  []*fleetNode
	p      *mpb.Progress
	bars   []*mpb.Bar // committed, published, then one per node
	period time.Duration
}

func newProgress(o Options, fleet []*fleetNode) *progress {
	pr := &progress{w: o.Progress, total: int64(o.Events), fleet: fleet, period: time.Second}
	if pr.w == nil || !o.Bars {
		return pr
	}
	pr.period = 100 * time.Millisecond
	pr.p = mpb.New(mpb.WithOutput(pr.w), mpb.WithWidth(40), mpb.WithRefreshRate(100*time.Millisecond))
	names := []string{"committed", "published"}
	for _, fn := range fleet {
		names = append(names, fn.name+" applied")
	}
	for _, name := range names {
		pr.bars = append(pr.bars, pr.p.AddBar(pr.total,
			mpb.PrependDecorators(decor.Name(name, decor.WC{W: 17, C: decor.DindentRight}),
				decor.CountersNoUnit("%d/%d", decor.WC{W: 12})),
			mpb.AppendDecorators(decor.Percentage(decor.WC{W: 5}))))
	}
	return pr
}

// run updates the display until ctx is done.
func (pr *progress) run(ctx context.Context, committed *atomic.Int64, producer *node.Node) {
	if pr.w == nil {
		return
	}
	tick := time.NewTicker(pr.period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		vals := []int64{committed.Load(), int64(producer.Pump().Stats().Published)}
		for _, fn := range pr.fleet {
			vals = append(vals, int64(fn.n.Applier().Status().Cursor))
		}
		if pr.p != nil {
			for i, b := range pr.bars {
				b.SetCurrent(min(vals[i], pr.total))
			}
			continue
		}
		var b strings.Builder
		fmt.Fprintf(&b, "progress: committed %d/%d, published %d", vals[0], pr.total, vals[1])
		for i, fn := range pr.fleet {
			fmt.Fprintf(&b, ", %s %d", fn.name, vals[2+i])
		}
		fmt.Fprintln(pr.w, b.String())
	}
}

// finish completes the bars (ok) or abandons them, and waits until they are
// drawn for the last time.
func (pr *progress) finish(ok bool) {
	if pr.p == nil {
		return
	}
	for _, b := range pr.bars {
		if ok {
			b.SetCurrent(pr.total)
		} else {
			b.Abort(false)
		}
	}
	pr.p.Wait()
}
