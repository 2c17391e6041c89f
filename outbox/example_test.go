package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
	"github.com/controlfeed/controlfeed/outbox"
)

// exampleSink stands in for a real broker: it stamps ControlVersions 1, 2, ...
type exampleSink struct{ next uint64 }

func (s *exampleSink) Name() string { return "example" }
func (s *exampleSink) Append(_ context.Context, e controlevent.Event) (controlevent.Event, error) {
	s.next++
	e.ControlVersion = s.next
	return e, nil
}

// A producer records its change and the event in one transaction, then a pump
// publishes the event.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "outbox-example")
	defer os.RemoveAll(dir)
	db, err := sqlitedb.Open(ctx, filepath.Join(dir, "producer.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	if err := outbox.Migrate(ctx, db); err != nil {
		fmt.Println(err)
		return
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)`); err != nil {
		fmt.Println(err)
		return
	}

	// The producer's transaction: its own mutation plus the outbox row.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO kv (k, v) VALUES ('greeting', 'hello')`); err != nil {
		fmt.Println(err)
		return
	}
	payload := []byte("hello")
	err = outbox.Append(ctx, tx, controlevent.Event{
		EventID:     controlevent.NewEventID(),
		Type:        "kv.put",
		Key:         "greeting",
		Version:     1,
		ArtifactRef: controlevent.Checksum(payload), // stored in the artifact store first
		Checksum:    controlevent.Checksum(payload),
	})
	if err != nil {
		tx.Rollback()
		fmt.Println(err)
		return
	}
	if err := tx.Commit(); err != nil {
		fmt.Println(err)
		return
	}

	pump, err := outbox.NewPump(db, &exampleSink{}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	n, err := pump.Pass(ctx) // a long-running program calls Run and Notify instead
	fmt.Println("published:", n, err)
	c, _ := outbox.ReadCounts(ctx, db)
	fmt.Printf("pending %d, published %d, dead %d\n", c.Pending, c.Published, c.Dead)
	// Output:
	// published: 1 <nil>
	// pending 0, published 1, dead 0
}

// A producer records the artifact store its pump publishes references
// into; a writer checks its own store against the record before it stores
// a payload.
func ExampleCheckArtifactStore() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "outbox-example")
	defer os.RemoveAll(dir)
	db, err := sqlitedb.Open(ctx, filepath.Join(dir, "producer.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	pumps := outbox.ArtifactStore{Backend: "jetstream", Location: "controlfeed-artifacts"}
	if err := outbox.RecordArtifactStore(ctx, db, pumps); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(outbox.CheckArtifactStore(ctx, db, pumps))
	err = outbox.CheckArtifactStore(ctx, db, outbox.ArtifactStore{Backend: "file", Location: "/srv/artifacts"})
	fmt.Println(errors.Is(err, outbox.ErrArtifactStoreMismatch))
	// Output:
	// <nil>
	// true
}
