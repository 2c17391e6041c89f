package applier_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
)

// This example applies two events from an in-memory source to a node's
// SQLite database with a handler for the "greeting.set" type.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "applier-example")
	defer os.RemoveAll(dir)
	db, err := sqlitedb.Open(ctx, filepath.Join(dir, "node.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	if err := applier.Migrate(ctx, db); err != nil {
		fmt.Println(err)
		return
	}
	db.ExecContext(ctx, `CREATE TABLE greetings (lang TEXT PRIMARY KEY, text TEXT)`)

	src := &FakeSource{}
	src.Add(
		controlevent.Event{EventID: "e1", Type: "greeting.set", Key: "en", ControlVersion: 1},
		controlevent.Event{EventID: "e2", Type: "greeting.set", Key: "fr", ControlVersion: 2},
	)
	a, err := applier.New(db, src, nil, &applier.Config{
		Handlers: map[string]applier.Handler{
			"greeting.set": func(ctx context.Context, tx *sql.Tx, ev controlevent.Event, _ []byte) error {
				_, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO greetings VALUES (?, ?)`, ev.Key, "hello in "+ev.Key)
				return err
			},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	n, err := a.Step(ctx) // Run(ctx) loops this until ctx is done
	fmt.Println("applied:", n, err)
	st := a.Status()
	fmt.Println("cursor:", st.Cursor, "halted:", st.Halted != nil)
	acks, _ := src.recorded()
	fmt.Println("acked:", acks)
	// Output:
	// applied: 2 <nil>
	// cursor: 2 halted: false
	// acked: [e1 e2]
}
