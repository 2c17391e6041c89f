package feed_test

import (
	"context"
	"fmt"
	"os"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	// Programs activate backends with blank imports:
	//	_ "github.com/controlfeed/controlfeed/feed/filesource"
	//	_ "github.com/controlfeed/controlfeed/feed/nop"
)

func Example() {
	dir, err := os.MkdirTemp("", "feed-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	cfg := feed.SourceConfig{FileDir: dir}

	sink, err := feed.OpenSink("file", cfg)
	if err != nil {
		panic(err)
	}
	e, err := sink.Append(ctx, controlevent.Event{EventID: "evt-1", Type: "kv.put", Key: "tenants/acme"})
	if err != nil {
		panic(err)
	}
	fmt.Println("published at", e.ControlVersion)

	src, err := feed.Open("file", cfg)
	if err != nil {
		panic(err)
	}
	var cursor uint64
	for {
		events, err := src.Poll(ctx, cursor)
		if err != nil {
			panic(err)
		}
		if len(events) == 0 {
			break
		}
		for _, e := range events {
			fmt.Println("apply", e.ControlVersion, e.Type, e.Key)
			cursor = e.ControlVersion
		}
	}
	if _, ok := src.(feed.Acker); !ok {
		fmt.Println("the file source needs no acks")
	}
	// Output:
	// published at 1
	// apply 1 kv.put tenants/acme
	// the file source needs no acks
}
