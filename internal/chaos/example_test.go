package chaos_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/controlfeed/controlfeed/internal/chaos"
)

// A short by-hand run (compiled, not run by go test: it needs a built
// controlfeed binary and a program that calls chaos.MaybeChild first, such
// as cmd/controlfeed-chaos).
func ExampleRun() {
	dir, _ := os.MkdirTemp("", "chaos-")
	rep, err := chaos.Run(context.Background(), chaos.Config{
		Binary:   "./controlfeed",
		Self:     []string{"./controlfeed-chaos"},
		Dir:      dir,
		Events:   2000,
		Duration: 30 * time.Second,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	fmt.Println(rep) // the counts and the VERDICT line
}
