package filestore_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/filestore"
)

func Example() {
	dir, err := os.MkdirTemp("", "artifacts")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// Programs usually open it by name after a blank import:
	// artifact.Open("file", artifact.Config{Dir: dir}).
	s, err := filestore.New(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()

	ref, err := s.Put(ctx, strings.NewReader("hello, fleet\n"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ref)

	b, err := artifact.GetBytes(ctx, s, ref, 1<<20)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%q\n", b)

	p, _ := s.Path(ref)
	fmt.Println(strings.TrimPrefix(p, s.Dir()))
	// Output:
	// sha256:a963e87ae48c91da3ea9c3399321d0354d3289ecc12c9ef18bd1df2354b114a2
	// "hello, fleet\n"
	// /sha256/a9/a963e87ae48c91da3ea9c3399321d0354d3289ecc12c9ef18bd1df2354b114a2
}
