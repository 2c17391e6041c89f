package natsembed_test

import (
	"fmt"
	"os"

	"github.com/controlfeed/controlfeed/internal/natsembed"
	"github.com/nats-io/nats.go"
)

func Example() {
	dir, err := os.MkdirTemp("", "natsembed-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	srv, err := natsembed.Start(natsembed.Options{StoreDir: dir})
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown()

	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	fmt.Println("connected:", nc.IsConnected())
	// Output: connected: true
}
