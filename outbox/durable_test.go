package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/internal/failpoint"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
	"github.com/controlfeed/controlfeed/outbox"
)

// TestPump_PublishesOnlyDurableRows simulates a power loss at every instant
// a publish happens: the files as they were at the pump's last fsync are what
// a power loss would leave (everything written after it may vanish). Each
// event the sink receives must already be in that image of the producer's
// database, while producers keep committing beside the pump.
func TestPump_PublishesOnlyDurableRows(t *testing.T) {
	ctx := context.Background()
	db, path := openDB(t)
	image := t.TempDir() // the durable state: files as of the last fsync

	var mu sync.Mutex
	syncs := 0
	outbox.SetSyncFile(t, func(real func(string) error, p string) error {
		if err := real(p); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		syncs++
		// What a power loss right now keeps: the synced file's content.
		// The main file is whatever was synced by checkpoints before;
		// copying it now is generous only for pages a checkpoint wrote,
		// and the test runs no checkpoint.
		for _, suffix := range []string{"", "-wal"} {
			if err := copyFile(path+suffix, filepath.Join(image, "p.db"+suffix)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		return nil
	})

	durableHas := func(eventID string) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		dir, err := os.MkdirTemp(t.TempDir(), "restore")
		if err != nil {
			return false, err
		}
		for _, suffix := range []string{"", "-wal"} {
			if err := copyFile(filepath.Join(image, "p.db"+suffix), filepath.Join(dir, "p.db"+suffix)); err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					if suffix == "" {
						return false, nil // nothing was ever synced
					}
					continue
				}
				return false, err
			}
		}
		rdb, err := sqlitedb.Open(ctx, filepath.Join(dir, "p.db"))
		if err != nil {
			return false, err
		}
		defer rdb.Close()
		var n int
		err = rdb.QueryRowContext(ctx, `SELECT COUNT(*) FROM controlfeed_outbox WHERE event_id = ?`, eventID).Scan(&n)
		if err != nil && err != sql.ErrNoRows {
			return false, nil // no outbox table yet in the image: not durable
		}
		return n == 1, nil
	}

	var violations []string
	sink := &FakeSink{}
	sink.AppendFunc = func(ctx context.Context, e controlevent.Event) (controlevent.Event, error) {
		ok, err := durableHas(e.EventID)
		if err != nil {
			return e, err
		}
		if !ok {
			violations = append(violations, e.EventID)
		}
		return sink.Stamp(e)
	}
	p := newPump(t, db, sink, nil)

	const n = 40
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			appendCommitted(t, db, newEvent(i))
		}
	}()
	published := 0
	for published < n {
		k, err := p.Pass(ctx)
		if err != nil {
			t.Fatal(err)
		}
		published += k
	}
	<-done
	if len(violations) > 0 {
		t.Fatalf("%d of %d events were published before the transaction that created them was durable (first: %s)", len(violations), n, violations[0])
	}
	if syncs == 0 {
		t.Fatal("the pump never synced the database before publishing")
	}
	t.Logf("%d events published after %d syncs", n, syncs)
}

// TestPump_SyncFailurePublishesNothing: if the fsync fails the rows are
// not published, and the pass reports why.
func TestPump_SyncFailurePublishesNothing(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	outbox.SetSyncFile(t, func(func(string) error, string) error { return fmt.Errorf("injected EIO") })
	sink := &FakeSink{}
	p := newPump(t, db, sink, nil)
	appendCommitted(t, db, newEvent(1))
	_, err := p.Pass(ctx)
	if err == nil || !strings.Contains(err.Error(), "injected EIO") {
		t.Fatalf("Pass: err = %v, want the fsync failure", err)
	}
	if got := len(sink.Calls()); got != 0 {
		t.Fatalf("%d events published although the outbox could not be made durable", got)
	}
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// TestPump_PublishTimeout: a Sink that never answers (a held lock, a broker
// that swallowed the request) fails the pass after Config.PublishTimeout
// instead of holding the pump for ever, and while it waits Stats says on
// what.
func TestPump_PublishTimeout(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	entered := make(chan struct{}, 1)
	sink := &FakeSink{AppendFunc: func(ctx context.Context, e controlevent.Event) (controlevent.Event, error) {
		entered <- struct{}{}
		<-ctx.Done()
		return e, ctx.Err()
	}}
	p := newPump(t, db, sink, &outbox.Config{PublishTimeout: 300 * time.Millisecond})
	appendCommitted(t, db, newEvent(1))
	errc := make(chan error, 1)
	go func() { _, err := p.Pass(ctx); errc <- err }()
	<-entered
	st := p.Stats()
	if !strings.Contains(st.Waiting, `"evt-0001"`) || st.WaitingSince.IsZero() {
		t.Errorf("while the publish hangs, Stats.Waiting = %q since %v; want it to name evt-0001", st.Waiting, st.WaitingSince)
	}
	err := <-errc
	if err == nil || !strings.Contains(err.Error(), "PublishTimeout") {
		t.Fatalf("Pass: %v; want a PublishTimeout error", err)
	}
	if st := p.Stats(); st.Waiting != "" || !st.LastPublishAt.IsZero() {
		t.Errorf("after the timeout, Stats = %+v", st)
	}
	if got := len(pending(t, db)); got != 1 {
		t.Errorf("%d pending rows after the timed-out publish, want 1", got)
	}
}

// TestPump_AfterSyncImage: with outbox.after-sync=image(PATH) the pump
// writes a copy of the producer database after each fsync and before the
// publishes of the pass; every event a sink receives is in the image that
// existed when it was published (what the chaos suite's power loss
// restores).
func TestPump_AfterSyncImage(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	image := filepath.Join(t.TempDir(), "p.img")
	if err := failpoint.Enable(failpoint.OutboxAfterSync + "=image(" + image + ")"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(failpoint.Disable)
	var missing []string
	sink := &FakeSink{}
	sink.AppendFunc = func(ctx context.Context, e controlevent.Event) (controlevent.Event, error) {
		idb, err := sqlitedb.Open(ctx, image)
		if err != nil {
			return e, err
		}
		defer idb.Close()
		var n int
		if err := idb.QueryRowContext(ctx, `SELECT COUNT(*) FROM controlfeed_outbox WHERE event_id = ?`, e.EventID).Scan(&n); err != nil {
			return e, err
		}
		if n != 1 {
			missing = append(missing, e.EventID)
		}
		return sink.Stamp(e)
	}
	p := newPump(t, db, sink, nil)
	for round := range 3 {
		for i := range 5 {
			appendCommitted(t, db, newEvent(round*5+i))
		}
		if _, err := p.Pass(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(sink.Calls()); got != 15 {
		t.Fatalf("published %d events, want 15", got)
	}
	if len(missing) > 0 {
		t.Fatalf("%d events published that the image taken before their publish lacks: %v", len(missing), missing)
	}
	if n := failpoint.Fired(failpoint.OutboxAfterSync); n < 3 {
		t.Fatalf("image written %d times, want one per pass (3)", n)
	}
}
