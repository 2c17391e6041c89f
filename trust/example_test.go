package trust_test

import (
	"crypto/rand"
	"fmt"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/trust"
)

// A producer signs events in order; a node verifies each one and checks
// that it follows the chain head it has stored.
func Example() {
	key, _ := trust.GenerateKey(rand.Reader)
	ring, _ := trust.NewKeyring(key.Public())

	var producer, node trust.Head
	for _, id := range []string{"evt-1", "evt-2"} {
		e := controlevent.Event{EventID: id, Type: "kv.put", Key: "k", CreatedAt: time.Now()}
		signed, next, err := trust.Sign(key, e, producer)
		if err != nil {
			panic(err)
		}
		producer = next

		v, err := ring.Verify(signed) // on the node, before anything else
		if err == nil {
			err = node.Check(signed.EventID, v)
		}
		fmt.Println(id, "verified:", err == nil)
		node = v.Head()
	}

	// A replayed event is refused with its own reason.
	old, _, _ := trust.Sign(key, controlevent.Event{EventID: "evt-1", Type: "kv.put", CreatedAt: time.Now()}, trust.Head{})
	v, _ := ring.Verify(old)
	fmt.Println(node.Check(old.EventID, v) != nil)
	// Output:
	// evt-1 verified: true
	// evt-2 verified: true
	// true
}
