// Package nop is the disabled feed: the single-node default, registered as
// "nop" for both Source and Sink.
//
// The Source yields nothing, ever. The Sink accepts every event and discards
// it; it assigns no ControlVersion, so an outbox pump must not run against it
// (the pump refuses to start on a Sink named "nop").
package nop

import (
	"context"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
)

// Name is the registered name of this backend.
const Name = "nop"

func init() {
	feed.Register(Name, func(feed.SourceConfig) (feed.Source, error) { return Source{}, nil })
	feed.RegisterSink(Name, func(feed.SourceConfig) (feed.Sink, error) { return Sink{}, nil })
}

var (
	_ feed.Source = Source{}
	_ feed.Sink   = Sink{}
)

// Source is a feed.Source that never has events. It is safe for concurrent use.
type Source struct{}

// Poll returns no events and a nil error, or ctx's error if ctx is done.
func (Source) Poll(ctx context.Context, _ uint64) ([]controlevent.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return nil, nil
}

// Name returns "nop".
func (Source) Name() string { return Name }

// Sink is a feed.Sink that discards events. It is safe for concurrent use.
type Sink struct{}

// Append discards e and returns it unchanged, with ControlVersion still 0:
// nothing was published. It returns ctx's error if ctx is done.
func (Sink) Append(ctx context.Context, e controlevent.Event) (controlevent.Event, error) {
	return e, ctx.Err()
}

// Name returns "nop".
func (Sink) Name() string { return Name }
