package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Example runs the CLI in-process, the way main does, on a single-node
// database: put two keys, list them, and look up a missing one.
func Example() {
	dir, err := os.MkdirTemp("", "controlfeed-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	env := []string{"CONTROLFEED_DB=" + filepath.Join(dir, "producer.db")}
	m := &Main{Stdout: io.Discard, Environ: func() []string { return env }}
	ctx := context.Background()
	// kv put prints the new event's id; discard it, it differs every run.
	for _, kv := range [][2]string{{"tenant/1/plan", "pro"}, {"tenant/2/plan", "free"}} {
		if err := m.Run(ctx, []string{"kv", "put", kv[0], kv[1]}); err != nil {
			panic(err)
		}
	}
	m.Stdout = os.Stdout
	if err := m.Run(ctx, []string{"kv", "list"}); err != nil {
		panic(err)
	}
	err = m.Run(ctx, []string{"kv", "get", "tenant/3/plan"})
	fmt.Println("exit status:", exitCode(err, io.Discard))
	// Output:
	// tenant/1/plan	pro
	// tenant/2/plan	free
	// exit status: 1
}
