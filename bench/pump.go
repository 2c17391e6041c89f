package bench

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/outbox"
)

// appendOnly hides the Sink's optional interfaces, so the pump takes its
// one-Append-per-row path.
type appendOnly struct{ feed.Sink }

func runPump(ctx context.Context, e *env) ([]Result, error) {
	srv, err := startServer(e.dir)
	if err != nil {
		return nil, err
	}
	defer srv.close()
	p, err := newPool(ctx, filepath.Join(e.dir, "artifacts"))
	if err != nil {
		return nil, err
	}
	var out []Result

	// Sync: pump with Append vs raw js.Publish.
	n := e.cfg.PumpSyncEvents
	pumpRate, err := pumpPass(ctx, e, srv, p, "PUMPSYNC", n, false)
	if err != nil {
		return out, err
	}
	rawRate, err := rawPublish(ctx, srv, p, "RAWSYNC", n, 1)
	if err != nil {
		return out, err
	}
	out = append(out, ratioResult("pump/sync", "events/s", pumpRate, rawRate, 0.8,
		fmt.Sprintf("%d rows; Sink.Append + write-back vs js.Publish(MsgID)", n)))

	// Batch: pump with AppendBatch vs raw PublishAsync, 256 in flight.
	n = e.cfg.PumpBatchEvents
	pumpRate, err = pumpPass(ctx, e, srv, p, "PUMPBATCH", n, true)
	if err != nil {
		return out, err
	}
	rawRate, err = rawPublish(ctx, srv, p, "RAWBATCH", n, natsfeed.DefaultMaxBatchWindow)
	if err != nil {
		return out, err
	}
	out = append(out, ratioResult("pump/batch", "events/s", pumpRate, rawRate, 0.5,
		fmt.Sprintf("%d rows; AppendBatch + write-back vs PublishAsync x%d", n, natsfeed.DefaultMaxBatchWindow)))
	return out, nil
}

// pumpPass fills a new outbox with n rows and times one Pass draining it.
func pumpPass(ctx context.Context, e *env, srv *server, p *pool, stream string, n int, batch bool) (float64, error) {
	db, err := openDB(ctx, filepath.Join(e.dir, stream+".db"))
	if err != nil {
		return 0, err
	}
	defer db.Close()
	return timePass(ctx, srv, p, db, stream, n, batch)
}

// timePass fills db's empty outbox with n rows and times one Pass draining
// it into stream.
func timePass(ctx context.Context, srv *server, p *pool, db *sql.DB, stream string, n int, batch bool) (float64, error) {
	return timePassWith(ctx, srv, p, db, stream, n, batch, nil)
}

// timePassWith is timePass with the pump configured by cfg (nil: defaults).
func timePassWith(ctx context.Context, srv *server, p *pool, db *sql.DB, stream string, n int, batch bool, cfg *outbox.Config) (float64, error) {
	if err := fillOutbox(ctx, db, p, n); err != nil {
		return 0, err
	}
	sink, err := natsfeed.NewSink(ctx, srv.feedConfig(stream, ""), nil)
	if err != nil {
		return 0, err
	}
	defer sink.Close()
	var s feed.Sink = sink
	if !batch {
		s = appendOnly{sink}
	}
	pump, err := outbox.NewPump(db, s, cfg)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	got, err := pump.Pass(ctx)
	el := time.Since(start)
	if err != nil {
		return 0, err
	}
	if got != n {
		return 0, fmt.Errorf("pump pass published %d of %d rows", got, n)
	}
	c, err := outbox.ReadCounts(ctx, db)
	if err != nil {
		return 0, err
	}
	if c.Pending != 0 || c.Published != int64(n) {
		return 0, fmt.Errorf("after the pass: %+v, want %d published", c, n)
	}
	return float64(n) / el.Seconds(), nil
}

func fillOutbox(ctx context.Context, db *sql.DB, p *pool, n int) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	now := time.Now().UTC()
	for i := 1; i <= n; i++ {
		if err := outbox.Append(ctx, tx, p.event(i, now)); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// rawPublish encodes and publishes events 1..n with a Msg-Id, window at a
// time (1 = synchronous Publish), and returns events/s (encoding included).
func rawPublish(ctx context.Context, srv *server, p *pool, stream string, n, window int) (float64, error) {
	return rawPublishWriteBack(ctx, srv, p, stream, n, window, nil)
}

// rawPublishWriteBack is rawPublish that, when writeBack is not nil, also
// calls it after each publish (window 1) or each acknowledged window with
// the events' numbers first..last and the first one's stream sequence: the
// raw version of the pump's write-back.
func rawPublishWriteBack(ctx context.Context, srv *server, p *pool, stream string, n, window int,
	writeBack func(ctx context.Context, first, last int, seq uint64) error) (float64, error) {
	nc, js, err := srv.rawJS(ctx, stream)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	subj := "bench." + stream
	now := time.Now().UTC()
	evs := make([]controlevent.Event, n+1)
	for i := 1; i <= n; i++ {
		evs[i] = p.event(i, now)
	}
	bodies := make([][]byte, n+1)
	ids := make([]string, n+1)
	start := time.Now()
	// Encoding the bodies is timed: any publisher has to, and the pump
	// does it per row (the events themselves are built outside, as the
	// pump's come from rows written before its pass).
	for i := 1; i <= n; i++ {
		if bodies[i], err = controlevent.Marshal(evs[i]); err != nil {
			return 0, err
		}
		ids[i] = evs[i].EventID
	}
	if window <= 1 {
		for i := 1; i <= n; i++ {
			ack, err := js.Publish(ctx, subj, bodies[i], jetstream.WithMsgID(ids[i]))
			if err != nil {
				return 0, err
			}
			if writeBack != nil {
				if err := writeBack(ctx, i, i, ack.Sequence); err != nil {
					return 0, err
				}
			}
		}
	} else {
		futs := make([]jetstream.PubAckFuture, 0, window)
		for i := 1; i <= n; i += window {
			futs = futs[:0]
			for j := i; j < i+window && j <= n; j++ {
				f, err := js.PublishAsync(subj, bodies[j], jetstream.WithMsgID(ids[j]))
				if err != nil {
					return 0, err
				}
				futs = append(futs, f)
			}
			var firstSeq uint64
			for k, f := range futs {
				select {
				case ack := <-f.Ok():
					if k == 0 {
						firstSeq = ack.Sequence
					}
				case err := <-f.Err():
					return 0, err
				case <-ctx.Done():
					return 0, ctx.Err()
				}
			}
			if writeBack != nil {
				if err := writeBack(ctx, i, i+len(futs)-1, firstSeq); err != nil {
					return 0, err
				}
			}
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
