package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/outbox"
)

// TestPump_FeedOrderIsCommitOrder: many concurrent producer transactions
// change overlapping keys while a pump drains the outbox; for every key the
// feed carries its events in the order their transactions committed, each
// once, and a node that applies the feed ends with the producer's state.
//
// The producer's table st holds each key's value and a version that every
// change increments under the row's lock, so the versions of a key are its
// commit order; each transaction also records its event's version in
// history. Two producer styles run side by side:
//   - "change then Append" (keys m0..m5), one or two keys per transaction;
//   - "Append then change" (keys a0, a1), where the event is appended
//     before the row it describes is locked. Only the outbox's own ordering
//     (on PostgreSQL the advisory lock taken by the insert trigger) keeps
//     these in commit order: without it two such transactions can commit in
//     the reverse order of their outbox ids, and the pump, reading in id
//     order, publishes them reversed.
//
// Some transactions sleep before committing, so commits land late and out
// of id order while the pump reads ahead in small chunks; some roll back.
// CONTROLFEED_TEST_OUTBOX_ORDER_TXS sets the number of transactions (default
// 600).
func TestPump_FeedOrderIsCommitOrder(t *testing.T) {
	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		ctx := context.Background()
		db, _ := tdb.Open(t)
		mkeys := []string{"m0", "m1", "m2", "m3", "m4", "m5"}
		akeys := []string{"a0", "a1"}
		for _, q := range []string{
			`CREATE TABLE st (k TEXT PRIMARY KEY, version BIGINT NOT NULL, value TEXT NOT NULL)`,
			`CREATE TABLE history (event_id TEXT PRIMARY KEY, k TEXT NOT NULL, version BIGINT NOT NULL)`,
		} {
			if _, err := db.ExecContext(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		for _, k := range append(append([]string(nil), mkeys...), akeys...) {
			if _, err := db.ExecContext(ctx, `INSERT INTO st (k, version, value) VALUES ($1, 0, '')`, k); err != nil {
				t.Fatal(err)
			}
		}
		if outbox.DialectName(db) == "sqlite" {
			db.SetMaxOpenConns(4)
		} else {
			db.SetMaxOpenConns(24)
		}

		txs := 600
		if s := os.Getenv("CONTROLFEED_TEST_OUTBOX_ORDER_TXS"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil {
				t.Fatalf("CONTROLFEED_TEST_OUTBOX_ORDER_TXS=%q: %v", s, err)
			}
			txs = n
		}

		sink := &FakeBatchSink{}
		pump := newPump(t, db, sink, &outbox.Config{BatchSize: 4, PollInterval: time.Millisecond, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
		runCtx, stop := context.WithCancel(ctx)
		runDone := make(chan error, 1)
		go func() { runDone <- pump.Run(runCtx) }()

		const workers = 16
		var (
			wg        sync.WaitGroup
			mu        sync.Mutex
			committed int
			failures  []error
		)
		jobs := make(chan int)
		for w := range workers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(w), 17))
				for j := range jobs {
					n, err := orderTx(ctx, db, rng, j, mkeys, akeys)
					mu.Lock()
					committed += n
					if err != nil {
						failures = append(failures, err)
					}
					mu.Unlock()
					pump.Notify()
				}
			})
		}
		for j := range txs {
			jobs <- j
		}
		close(jobs)
		wg.Wait()
		for _, err := range failures {
			t.Error(err)
		}
		if t.Failed() {
			stop()
			<-runDone
			return
		}
		deadline := time.Now().Add(2 * time.Minute)
		for readCounts(t, db).Pending > 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		stop()
		if err := <-runDone; err != nil {
			t.Fatal(err)
		}
		if _, err := pump.Pass(ctx); err != nil {
			t.Fatal(err)
		}

		// The committed history: event_id -> (key, version).
		type change struct {
			k       string
			version int64
		}
		hist := map[string]change{}
		rows, err := db.QueryContext(ctx, `SELECT event_id, k, version FROM history`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id string
			var c change
			if err := rows.Scan(&id, &c.k, &c.version); err != nil {
				t.Fatal(err)
			}
			hist[id] = c
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}

		feed := sink.Feed()
		if len(feed) != len(hist) || len(feed) != committed {
			t.Fatalf("feed has %d events, history %d, committed %d; want all equal", len(feed), len(hist), committed)
		}
		// Each key's events in the feed: versions 1, 2, 3, ... in order.
		// The node applies the feed in order.
		last := map[string]int64{}
		node := map[string]string{}
		reversed := 0
		for _, e := range feed {
			c, ok := hist[e.EventID]
			if !ok {
				t.Fatalf("feed carries %s, which no committed transaction appended", e.EventID)
			}
			if c.k != e.Key {
				t.Fatalf("%s: key %q in the feed, %q in history", e.EventID, e.Key, c.k)
			}
			if c.version != last[c.k]+1 {
				reversed++
				if reversed <= 5 {
					t.Errorf("key %s: %s (committed as version %d) follows version %d in the feed: the feed is not in commit order", c.k, e.EventID, c.version, last[c.k])
				}
			}
			last[c.k] = c.version
			node[c.k] = e.ArtifactRef
		}
		if reversed > 0 {
			t.Fatalf("%d of %d events out of their key's commit order", reversed, len(feed))
		}
		// The node's state equals the producer's.
		rows, err = db.QueryContext(ctx, `SELECT k, version, value FROM st`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var k, v string
			var version int64
			if err := rows.Scan(&k, &version, &v); err != nil {
				t.Fatal(err)
			}
			if version != last[k] {
				t.Errorf("key %s: producer at version %d, the feed's last event for it is version %d", k, version, last[k])
			}
			if want := refOf(v); version > 0 && node[k] != want {
				t.Errorf("key %s: node holds %s, producer %s", k, node[k], want)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d transactions committed %d events; every key's events in commit order", tdb.Name, txs, len(feed))
	})
}

func refOf(value string) string { return controlevent.Checksum([]byte(value)) }

// orderTx runs producer transaction j of TestPump_FeedOrderIsCommitOrder,
// retrying it when the database reports a conflict, and returns how many
// events it committed.
func orderTx(ctx context.Context, db *sql.DB, rng *rand.Rand, j int, mkeys, akeys []string) (int, error) {
	appendFirst := rng.IntN(4) == 0
	var keys []string
	if appendFirst {
		keys = []string{akeys[rng.IntN(len(akeys))]}
	} else {
		a, b := rng.IntN(len(mkeys)), rng.IntN(len(mkeys))
		keys = []string{mkeys[min(a, b)]}
		if a != b && rng.IntN(2) == 0 {
			keys = append(keys, mkeys[max(a, b)]) // sorted: no lock cycles
		}
	}
	rollback := rng.IntN(10) == 0
	sleep := time.Duration(0)
	if rng.IntN(3) == 0 {
		sleep = time.Duration(rng.IntN(3000)) * time.Microsecond
	}
	var lastErr error
	for attempt := range 50 {
		n, err := orderTxOnce(ctx, db, j, attempt, keys, appendFirst, rollback, sleep)
		if err == nil {
			return n, nil
		}
		lastErr = err
		time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
	}
	return 0, fmt.Errorf("transaction %d on %v: %w", j, keys, lastErr)
}

func orderTxOnce(ctx context.Context, db *sql.DB, j, attempt int, keys []string, appendFirst, rollback bool, sleep time.Duration) (int, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var events []controlevent.Event
	for i, k := range keys {
		id := fmt.Sprintf("tx%05d-%d-%s-try%d", j, i, k, attempt)
		value := fmt.Sprintf("%s by tx %d", k, j)
		e := controlevent.Event{EventID: id, Type: "st.set", Key: k, ArtifactRef: refOf(value), Checksum: refOf(value)}
		if appendFirst {
			if err := outbox.Append(ctx, tx, e); err != nil {
				return 0, err
			}
		}
		var version int64
		if err := tx.QueryRowContext(ctx, `UPDATE st SET version = version + 1, value = $1 WHERE k = $2 RETURNING version`, value, k).Scan(&version); err != nil {
			return 0, err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO history (event_id, k, version) VALUES ($1, $2, $3)`, id, k, version); err != nil {
			return 0, err
		}
		events = append(events, e)
	}
	if !appendFirst {
		// The contract: Append after all of the transaction's changes.
		for _, e := range events {
			if err := outbox.Append(ctx, tx, e); err != nil {
				return 0, err
			}
		}
	}
	time.Sleep(sleep)
	if rollback {
		return 0, tx.Rollback()
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	return len(keys), nil
}
