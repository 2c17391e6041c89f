package dbrole_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/controlfeed/controlfeed/dbrole"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
)

func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "dbrole-example-")
	defer os.RemoveAll(dir)
	db, err := sqlitedb.Open(ctx, filepath.Join(dir, "node.db"))
	if err != nil {
		panic(err)
	}
	defer db.Close()

	fmt.Println(dbrole.CheckLocalWrite(ctx, db)) // no role yet: writes allowed
	if err := dbrole.Record(ctx, db, dbrole.Node); err != nil {
		panic(err)
	}
	r, _ := dbrole.Get(ctx, db)
	fmt.Println(r)
	fmt.Println(errors.Is(dbrole.CheckLocalWrite(ctx, db), dbrole.ErrNodeDatabase))
	fmt.Println(errors.Is(dbrole.Record(ctx, db, dbrole.Producer), dbrole.ErrConflict))
	// Output:
	// <nil>
	// node
	// true
	// true
}
