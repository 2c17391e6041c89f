package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/feed/filesource"
	"github.com/controlfeed/controlfeed/internal/pgtest"
	"github.com/controlfeed/controlfeed/outbox"
)

// Environment of the helper process of TestPump_DrainerTakeoverAfterSIGKILL.
const (
	helperPumpURL  = "CONTROLFEED_TEST_OUTBOX_HELPER_PUMP_URL"
	helperPumpFeed = "CONTROLFEED_TEST_OUTBOX_HELPER_PUMP_FEED"
)

// TestHelperPump is not a test: run by TestPump_DrainerTakeoverAfterSIGKILL
// as a separate process, it runs one pump on the PostgreSQL outbox at
// $CONTROLFEED_TEST_OUTBOX_HELPER_PUMP_URL into the file feed at
// $CONTROLFEED_TEST_OUTBOX_HELPER_PUMP_FEED until killed.
func TestHelperPump(t *testing.T) {
	u := os.Getenv(helperPumpURL)
	if u == "" {
		t.Skip("helper process only")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	db, err := sql.Open("pgx", u)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sink, err := filesource.NewSink(os.Getenv(helperPumpFeed), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	p, err := outbox.NewPump(db, sink, &outbox.Config{PollInterval: 10 * time.Millisecond, DrainerLockInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestPump_DrainerTakeoverAfterSIGKILL: two pump processes on one
// PostgreSQL outbox and one file feed, a producer appending all along; the
// holder of the drainer lock is SIGKILLed, three times in a row (each time a
// new standby is started). The standby takes the lock, the feed ends with
// every event exactly once and in outbox order. The takeover times are
// logged, not asserted.
func TestPump_DrainerTakeoverAfterSIGKILL(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		if tdb.Name != "postgres" {
			t.Skip("the drainer lock is PostgreSQL's")
		}
		if testing.Short() {
			t.Skip("starts processes")
		}
		ctx := context.Background()
		schemaURL := pgtest.NewSchema(t)
		db := pgtest.Open(t, schemaURL)
		if err := outbox.Migrate(ctx, db); err != nil {
			t.Fatal(err)
		}
		feedDir := filepath.Join(t.TempDir(), "feed")
		if err := os.MkdirAll(feedDir, 0o755); err != nil {
			t.Fatal(err)
		}
		procs := map[string]*exec.Cmd{}
		start := func(name string) {
			u, err := url.Parse(schemaURL)
			if err != nil {
				t.Fatal(err)
			}
			q := u.Query()
			q.Set("application_name", name)
			u.RawQuery = q.Encode()
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperPump$", "-test.count=1")
			cmd.Env = append(os.Environ(), helperPumpURL+"="+u.String(), helperPumpFeed+"="+feedDir)
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			procs[name] = cmd
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		}
		holder := func() string {
			var name sql.NullString
			err := db.QueryRow(`SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
				WHERE l.locktype = 'advisory' AND l.classid = 1668247157 AND l.objid = 'controlfeed_outbox'::regclass::oid
				AND l.objsubid = 2 AND l.granted`).Scan(&name)
			if err == sql.ErrNoRows {
				return ""
			}
			if err != nil {
				t.Fatal(err)
			}
			return name.String
		}

		stopProd := make(chan struct{})
		prodDone := make(chan error, 1)
		appended := 0
		go func() {
			for i := 1; ; i++ {
				select {
				case <-stopProd:
					prodDone <- nil
					return
				default:
				}
				tx, err := db.BeginTx(ctx, nil)
				if err == nil {
					if err = outbox.Append(ctx, tx, newEvent(i)); err == nil {
						err = tx.Commit()
					} else {
						tx.Rollback()
					}
				}
				if err != nil {
					prodDone <- err
					return
				}
				appended = i
				time.Sleep(2 * time.Millisecond)
			}
		}()

		start("pump-0")
		waitFor(t, "pump-0 to take the drainer lock", func() bool { return holder() == "pump-0" })
		for k := 1; k <= 3; k++ {
			standby := fmt.Sprintf("pump-%d", k)
			start(standby)
			time.Sleep(300 * time.Millisecond) // it stands by, the feed grows
			// The lock may be between holders for a moment (a session
			// ending, a takeover in progress): kill whoever holds it next.
			var victim string
			waitFor(t, "a pump to hold the drainer lock", func() bool {
				victim = holder()
				return procs[victim] != nil
			})
			killed := time.Now()
			if err := procs[victim].Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			procs[victim].Wait()
			delete(procs, victim) // dead: never the victim again
			waitFor(t, standby+" to take over", func() bool { return holder() == standby })
			t.Logf("SIGKILL of %s: %s took over after %v", victim, standby, time.Since(killed))
		}
		close(stopProd)
		if err := <-prodDone; err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the outbox to drain", func() bool { return readCounts(t, db).Pending == 0 })

		src, err := filesource.NewSource(feedDir, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		var cv uint64
		n := 0
		for {
			events, err := src.Poll(ctx, cv)
			if err != nil {
				t.Fatal(err)
			}
			if len(events) == 0 {
				break
			}
			for _, e := range events {
				n++
				if want := newEvent(n).EventID; e.EventID != want {
					t.Fatalf("feed event %d (control_version %d) is %s, want %s: lost, repeated or out of order", n, e.ControlVersion, e.EventID, want)
				}
				cv = e.ControlVersion
			}
		}
		if n != appended {
			t.Fatalf("feed has %d events, %d were appended", n, appended)
		}
		t.Logf("%d events across 3 SIGKILLed holders, each once and in order", n)
	})
}
