package nop_test

import (
	"context"
	"errors"
	"testing"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/nop"
)

// The nop backend cannot pass the conformance suite (it stamps nothing), so
// its whole contract is tested here: the Source yields nothing, the Sink
// discards and returns the input with ControlVersion 0, both honour ctx.
func TestNop(t *testing.T) {
	src, err := feed.Open(nop.Name, feed.SourceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	sink, err := feed.OpenSink(nop.Name, feed.SourceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if src.Name() != "nop" || sink.Name() != "nop" {
		t.Fatalf("names %q %q", src.Name(), sink.Name())
	}
	ctx := t.Context()
	in := controlevent.Event{EventID: controlevent.NewEventID(), Type: "kv.put"}
	out, err := sink.Append(ctx, in)
	if err != nil || out != in || out.ControlVersion != 0 {
		t.Fatalf("Append = %+v, %v; want the input, ControlVersion 0, nil", out, err)
	}
	for _, since := range []uint64{0, 1, 1 << 63} {
		got, err := src.Poll(ctx, since)
		if err != nil || len(got) != 0 {
			t.Fatalf("Poll(%d) after an Append = %v, %v; want nothing", since, got, err)
		}
	}
	if _, ok := src.(feed.Acker); ok {
		t.Error("nop Source implements Acker; it has nothing to ack")
	}

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := src.Poll(canceled, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Poll with a canceled ctx = %v", err)
	}
	out, err = sink.Append(canceled, in)
	if !errors.Is(err, context.Canceled) || out != in {
		t.Errorf("Append with a canceled ctx = %+v, %v; want the input and context.Canceled", out, err)
	}
}
