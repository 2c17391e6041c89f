package node_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	_ "github.com/controlfeed/controlfeed/artifact/filestore"
	"github.com/controlfeed/controlfeed/feed"
	_ "github.com/controlfeed/controlfeed/feed/filesource"
	_ "github.com/controlfeed/controlfeed/feed/nop"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/kv"
)

// Example runs a producer and a fleet node in one process, sharing a
// directory feed and an artifact directory, and waits for a key to replicate.
func Example() {
	dir, err := os.MkdirTemp("", "node-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	shared := func(db string, c node.Config) *node.Config {
		c.DB = filepath.Join(dir, db)
		c.Feed = feed.SourceConfig{FileDir: filepath.Join(dir, "feed")}
		c.Artifact.Dir = filepath.Join(dir, "artifacts")
		return &c
	}
	producer, err := node.Open(ctx, shared("producer.db", node.Config{FeedSink: "file"}))
	if err != nil {
		panic(err)
	}
	defer producer.Close()
	fleet, err := node.Open(ctx, shared("node1.db", node.Config{FeedSource: "file", NodeName: "node1"}))
	if err != nil {
		panic(err)
	}
	defer fleet.Close()
	var wg sync.WaitGroup
	wg.Go(func() { producer.Run(ctx) })
	wg.Go(func() { fleet.Run(ctx) })
	defer wg.Wait() // deferred calls run last first: cancel, wait, then Close
	defer cancel()

	if _, err := kv.Put(ctx, producer.DB(), producer.Store(), "greeting", []byte("hello")); err != nil {
		panic(err)
	}
	for {
		if e, ok, _ := kv.Get(ctx, fleet.DB(), "greeting"); ok {
			st, _ := fleet.Status(ctx)
			fmt.Printf("node1: %s=%s at cursor %d\n", e.Key, e.Value, st.Cursor)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Output:
	// node1: greeting=hello at cursor 1
}
