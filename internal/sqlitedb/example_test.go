package sqlitedb_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/controlfeed/controlfeed/internal/sqlitedb"
)

func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "sqlitedb-example-")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	db, err := sqlitedb.Open(ctx, filepath.Join(dir, "node.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	var mode string
	db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode)
	fmt.Println("journal mode:", mode)
	// Output: journal mode: wal
}
