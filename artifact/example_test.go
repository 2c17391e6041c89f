package artifact_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"

	"github.com/controlfeed/controlfeed/artifact"
	_ "github.com/controlfeed/controlfeed/artifact/filestore" // registers "file"
)

func ExampleOpen() {
	dir, err := os.MkdirTemp("", "artifacts")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	s, err := artifact.Open("file", artifact.Config{Dir: dir})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	ref, err := artifact.PutBytes(ctx, s, []byte(`{"tenant":"acme"}`))
	if err != nil {
		log.Fatal(err)
	}
	b, err := artifact.GetBytes(ctx, s, ref, 1<<20)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ref == artifact.RefOf(b), string(b))

	_, err = s.Get(ctx, artifact.RefOf([]byte("never stored")))
	fmt.Println(errors.Is(err, artifact.ErrNotFound))
	// Output:
	// true {"tenant":"acme"}
	// true
}

func ExampleVerifyReader() {
	ref := artifact.RefOf([]byte("the real payload"))
	r := artifact.VerifyReader(bytes.NewReader([]byte("a substituted one")), ref)
	_, err := io.ReadAll(r)
	fmt.Println(errors.Is(err, artifact.ErrCorrupt))
	// Output:
	// true
}

func ExampleParseRef() {
	fmt.Println(artifact.ParseRef(artifact.RefOf([]byte("x"))))
	fmt.Println(errors.Is(artifact.ParseRef("../../etc/passwd"), artifact.ErrBadRef))
	// Output:
	// <nil>
	// true
}
