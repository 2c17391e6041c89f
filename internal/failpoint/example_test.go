package failpoint_test

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/controlfeed/controlfeed/internal/failpoint"
)

// A test makes the second and later commits of an applier fail as if the
// disk were full, then lets it recover.
func Example() {
	if err := failpoint.Enable("applier.before-commit=2*enospc"); err != nil {
		fmt.Println(err)
		return
	}
	defer failpoint.Disable()
	for i := range 3 {
		err := failpoint.Inject(failpoint.ApplierBeforeCommit)
		fmt.Println(i, err, errors.Is(err, syscall.ENOSPC))
	}
	fmt.Println(failpoint.Spec())
	// Output:
	// 0 failpoint: "applier.before-commit": injected failure: no space left on device true
	// 1 failpoint: "applier.before-commit": injected failure: no space left on device true
	// 2 <nil> false
	// applier.before-commit=2*enospc
}

// An unknown name is rejected with the list of known points.
func ExampleEnable() {
	err := failpoint.Enable("kv.after-comit=exit")
	fmt.Println(err != nil)
	// Output: true
}
