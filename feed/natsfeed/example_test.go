package natsfeed_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/internal/natsembed"
)

func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "natsfeed-example")
	defer os.RemoveAll(dir)
	srv, err := natsembed.Start(natsembed.Options{StoreDir: dir})
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown()

	cfg := feed.SourceConfig{NATS: feed.NATSConfig{URLs: []string{srv.ClientURL()}, NodeName: "edge-1"}}
	sink, err := feed.OpenSink(natsfeed.Name, cfg)
	if err != nil {
		panic(err)
	}
	defer sink.(*natsfeed.Sink).Close()
	src, err := feed.Open(natsfeed.Name, cfg)
	if err != nil {
		panic(err)
	}
	defer src.(*natsfeed.Source).Close()

	for _, key := range []string{"tenant/a", "tenant/b"} {
		e := controlevent.Event{EventID: controlevent.NewEventID(), Type: "kv.put", Key: key, CreatedAt: time.Now()}
		if _, err := sink.Append(ctx, e); err != nil {
			panic(err)
		}
	}

	evs, err := src.Poll(ctx, 0)
	if err != nil {
		panic(err)
	}
	for _, e := range evs {
		fmt.Println(e.ControlVersion, e.Key)
	}
	// After the local transaction commits, acknowledge the batch.
	if err := src.(feed.CumulativeAcker).AckThrough(ctx, evs[len(evs)-1].EventID); err != nil {
		panic(err)
	}
	// Output:
	// 1 tenant/a
	// 2 tenant/b
}
