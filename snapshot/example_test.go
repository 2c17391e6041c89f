package snapshot_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/artifact/filestore"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
	"github.com/controlfeed/controlfeed/snapshot"
)

// A node's database is copied into the artifact store and restored as a new
// node's database, which starts from the snapshot's cursor.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "snapshot-example-")
	defer os.RemoveAll(dir)
	store, err := filestore.New(filepath.Join(dir, "store"), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	node, err := sqlitedb.Open(ctx, filepath.Join(dir, "node.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer node.Close()
	if err := applier.Migrate(ctx, node); err != nil {
		fmt.Println(err)
		return
	}
	// (A running node would have applied events; here the cursor is set.)
	tx, _ := node.BeginTx(ctx, nil)
	applier.SetCursor(ctx, tx, 42)
	tx.Commit()

	m, err := snapshot.Create(ctx, node, store, &snapshot.CreateOptions{Node: "edge-1"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("snapshot at control version", m.ControlVersion, "from", m.Node)

	target := filepath.Join(dir, "new-node.db")
	if _, err := snapshot.RestoreRef(ctx, store, m.Ref, target, nil); err != nil {
		fmt.Println(err)
		return
	}
	restored, _ := sqlitedb.Open(ctx, target)
	defer restored.Close()
	cv, _ := applier.ReadCursor(ctx, restored)
	fmt.Println("restored node resumes after", cv)

	// A second restore would replace a populated database: refused.
	err = snapshot.Restore(ctx, store, m, target, nil)
	fmt.Println(err != nil)
	// Output:
	// snapshot at control version 42 from edge-1
	// restored node resumes after 42
	// true
}
