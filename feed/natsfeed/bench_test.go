package natsfeed_test

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/internal/natsembed"
)

// The Raw benchmarks encode the same events and publish them with the same
// Msg-Id straight through jetstream: the baseline the Sink's overhead
// (validation, the expected-stream header, order checks) is measured against.

func benchEvents(b *testing.B) []controlevent.Event {
	evs := make([]controlevent.Event, b.N)
	for i := range evs {
		evs[i] = newEvent()
	}
	return evs
}

func BenchmarkSink_Append(b *testing.B) {
	ctx := b.Context()
	srv := natsembed.StartForTest(b)
	sink := openSink(ctx, b, testConfig(srv))
	evs := benchEvents(b)
	b.ResetTimer()
	for i := range b.N {
		if _, err := sink.Append(ctx, evs[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkRawPublishSync(b *testing.B) {
	ctx := b.Context()
	srv := natsembed.StartForTest(b)
	cfg := testConfig(srv)
	openSink(ctx, b, cfg).Close() // creates the stream
	_, js := rawJS(b, srv)
	evs := benchEvents(b)
	b.ResetTimer()
	for i := range b.N {
		body, _ := controlevent.Marshal(evs[i])
		if _, err := js.Publish(ctx, cfg.Subject, body, jetstream.WithMsgID(evs[i].EventID)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkSink_AppendBatch(b *testing.B) {
	ctx := b.Context()
	srv := natsembed.StartForTest(b)
	sink := openSink(ctx, b, testConfig(srv))
	evs := benchEvents(b)
	b.ResetTimer()
	for i := 0; i < b.N; i += natsfeed.DefaultMaxBatchWindow {
		if _, err := sink.AppendBatch(ctx, evs[i:min(i+natsfeed.DefaultMaxBatchWindow, b.N)]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkRawPublishAsync(b *testing.B) {
	ctx := b.Context()
	srv := natsembed.StartForTest(b)
	cfg := testConfig(srv)
	openSink(ctx, b, cfg).Close()
	_, js := rawJS(b, srv)
	evs := benchEvents(b)
	b.ResetTimer()
	for i := 0; i < b.N; i += natsfeed.DefaultMaxBatchWindow {
		end := min(i+natsfeed.DefaultMaxBatchWindow, b.N)
		futs := make([]jetstream.PubAckFuture, 0, end-i)
		for j := i; j < end; j++ {
			body, _ := controlevent.Marshal(evs[j])
			f, err := js.PublishAsync(cfg.Subject, body, jetstream.WithMsgID(evs[j].EventID))
			if err != nil {
				b.Fatal(err)
			}
			futs = append(futs, f)
		}
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkSource_Poll(b *testing.B) {
	ctx := b.Context()
	srv := natsembed.StartForTest(b)
	cfg := testConfig(srv)
	sink := openSink(ctx, b, cfg)
	if _, err := sink.AppendBatch(ctx, benchEvents(b)); err != nil {
		b.Fatal(err)
	}
	src := openSource(ctx, b, cfg)
	b.ResetTimer()
	var cursor uint64
	for cursor < uint64(b.N) {
		evs, err := src.Poll(ctx, cursor)
		if err != nil {
			b.Fatal(err)
		}
		if len(evs) == 0 {
			b.Fatalf("Poll(%d) empty before %d", cursor, b.N)
		}
		cursor = evs[len(evs)-1].ControlVersion
		if err := src.AckThrough(ctx, evs[len(evs)-1].EventID); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
