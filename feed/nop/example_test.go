package nop_test

import (
	"context"
	"fmt"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed/nop"
)

func Example() {
	ctx := context.Background()
	e, err := nop.Sink{}.Append(ctx, controlevent.Event{EventID: "evt-1", Type: "kv.put"})
	fmt.Println(e.ControlVersion, err)
	events, err := nop.Source{}.Poll(ctx, 0)
	fmt.Println(len(events), err)
	// Output:
	// 0 <nil>
	// 0 <nil>
}
