package bench_test

import (
	"context"
	"fmt"
	"os"

	"github.com/controlfeed/controlfeed/bench"
)

// Run the CI-sized file-backend measurements and print the table. (Compiled,
// not run by go test: it takes seconds and prints machine-dependent figures.)
func ExampleRun() {
	rep, err := bench.Run(context.Background(), &bench.Config{Quick: true, Only: []string{"file"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	rep.WriteTable(os.Stdout)
}
