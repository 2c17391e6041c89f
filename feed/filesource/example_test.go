package filesource_test

import (
	"context"
	"fmt"
	"os"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed/filesource"
)

func Example() {
	dir, err := os.MkdirTemp("", "feed-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()

	sink, err := filesource.NewSink(dir, nil)
	if err != nil {
		panic(err)
	}
	defer sink.Close()
	for _, key := range []string{"tenants/acme", "tenants/globex"} {
		e, err := sink.Append(ctx, controlevent.Event{EventID: "evt-" + key, Type: "kv.put", Key: key})
		if err != nil {
			panic(err)
		}
		fmt.Println("appended", e.Key, "at", e.ControlVersion)
	}

	src, err := filesource.NewSource(dir, nil)
	if err != nil {
		panic(err)
	}
	defer src.Close()
	events, err := src.Poll(ctx, 1) // everything after ControlVersion 1
	if err != nil {
		panic(err)
	}
	for _, e := range events {
		fmt.Println("polled", e.ControlVersion, e.Key)
	}
	// Output:
	// appended tenants/acme at 1
	// appended tenants/globex at 2
	// polled 2 tenants/globex
}
