package natsobject_test

import (
	"context"
	"fmt"
	"os"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/natsobject"
	"github.com/controlfeed/controlfeed/internal/natsembed"
)

func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "natsobject-example")
	defer os.RemoveAll(dir)
	srv, err := natsembed.Start(natsembed.Options{StoreDir: dir})
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown()

	store, err := artifact.Open(natsobject.Name, artifact.Config{NATS: artifact.NATSConfig{URLs: []string{srv.ClientURL()}, Create: true}})
	if err != nil {
		panic(err)
	}
	defer store.(artifact.Closer).Close()

	ref, err := artifact.PutBytes(ctx, store, []byte("hello"))
	if err != nil {
		panic(err)
	}
	b, err := artifact.GetBytes(ctx, store, ref, 1<<20)
	if err != nil {
		panic(err)
	}
	fmt.Println(ref)
	fmt.Println(string(b))
	// Output:
	// sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824
	// hello
}
