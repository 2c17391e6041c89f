package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/outbox"
)

// TestPump_ListenWakesRun: on PostgreSQL a row committed by another process
// wakes the pump through the insert trigger's NOTIFY, with no Notify call
// and a poll interval far beyond the test's guard; after its LISTEN
// connection is terminated the pump listens again, and finds the rows
// committed meanwhile.
func TestPump_ListenWakesRun(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		if tdb.Name != "postgres" {
			t.Skip("LISTEN/NOTIFY is PostgreSQL's; SQLite has only Notify and polling")
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		db, reopen := tdb.Open(t)
		other := reopen(t) // another process's connection pool
		got := make(chan string, 10)
		sink := &FakeSink{}
		sink.AppendFunc = func(ctx context.Context, e controlevent.Event) (controlevent.Event, error) {
			defer func() { got <- e.EventID }()
			return sink.Stamp(e)
		}
		p := newPump(t, db, sink, &outbox.Config{PollInterval: 24 * time.Hour, MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})
		runErr := make(chan error, 1)
		go func() { runErr <- p.Run(ctx) }()
		waitListening(t, other, 1)
		for i := 1; i <= 3; i++ {
			appendCommitted(t, other, newEvent(i))
			if id, want := recv(t, got, "a publish woken by NOTIFY"), fmt.Sprintf("evt-%04d", i); id != want {
				t.Fatalf("published %s, want %s", id, want)
			}
		}

		// Kill the listening session; commit while the pump is not
		// listening. Its next LISTEN wakes it for what it missed.
		if _, err := other.ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE query = 'LISTEN controlfeed_outbox' AND pid <> pg_backend_pid() AND application_name = current_setting('application_name')`); err != nil {
			t.Fatal(err)
		}
		appendCommitted(t, other, newEvent(4))
		if id := recv(t, got, "a publish after the LISTEN connection was terminated"); id != "evt-0004" {
			t.Fatalf("published %s, want evt-0004", id)
		}
		waitListening(t, other, 1)
		appendCommitted(t, other, newEvent(5))
		if id := recv(t, got, "a publish woken by NOTIFY on the new connection"); id != "evt-0005" {
			t.Fatalf("published %s, want evt-0005", id)
		}
		cancel()
		if err := recv(t, runErr, "Run to return"); err != nil {
			t.Fatal(err)
		}
		waitListening(t, other, 0) // Run's end closes the LISTEN connection
	})
}

// waitListening waits until n sessions LISTEN on the outbox's channel.
func waitListening(t *testing.T, db *sql.DB, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got int
		if err := db.QueryRow(`SELECT COUNT(*) FROM pg_stat_activity
			WHERE query = 'LISTEN controlfeed_outbox' AND pid <> pg_backend_pid() AND application_name = current_setting('application_name')`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions LISTEN on controlfeed_outbox, want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
