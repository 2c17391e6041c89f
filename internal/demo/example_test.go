package demo_test

import (
	"context"
	"fmt"
	"os"

	"github.com/controlfeed/controlfeed/internal/demo"
)

// Run a small demo on the file feed and print only whether it passed (the
// report itself, with timings, goes to Out).
func Example() {
	res, err := demo.Run(context.Background(), demo.Options{Nodes: 2, Events: 20, Feed: demo.FeedFile, Out: os.Stderr})
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Println("passed:", res.Passed(), "nodes:", len(res.Nodes))
	// Output: passed: true nodes: 2
}
