package kv_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/controlfeed/controlfeed/artifact/filestore"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
	"github.com/controlfeed/controlfeed/kv"
	"github.com/controlfeed/controlfeed/outbox"
)

// This example writes a key on the producer side: the row and its kv.put
// event in the outbox are committed together.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "kv-example")
	defer os.RemoveAll(dir)
	db, err := sqlitedb.Open(ctx, filepath.Join(dir, "producer.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	if err := kv.Migrate(ctx, db); err != nil {
		fmt.Println(err)
		return
	}
	if err := outbox.Migrate(ctx, db); err != nil {
		fmt.Println(err)
		return
	}
	store, err := filestore.New(filepath.Join(dir, "artifacts"), nil)
	if err != nil {
		fmt.Println(err)
		return
	}

	ev, err := kv.Put(ctx, db, store, "tenants/acme", []byte(`{"plan":"pro"}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(ev.Type, ev.Key, "version", ev.Version, "base", ev.BaseVersion)
	e, _, _ := kv.Get(ctx, db, "tenants/acme")
	fmt.Printf("%s = %s\n", e.Key, e.Value)
	ev, existed, _ := kv.Delete(ctx, db, "tenants/acme")
	fmt.Println(ev.Type, existed, "version", ev.Version)
	// Output:
	// kv.put tenants/acme version 1 base 0
	// tenants/acme = {"plan":"pro"}
	// kv.delete true version 2
}
