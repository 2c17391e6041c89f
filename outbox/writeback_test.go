package outbox

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
)

// TestWriteBack_Batch: a chunk is recorded by one statement; every row gets
// its own ControlVersion, and a row no longer pending is left alone.
func TestWriteBack_Batch(t *testing.T) {
	ForEachDB(t, func(t *testing.T, tdb TestDB) {
		ctx := context.Background()
		db, _ := tdb.Open(t)
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"a", "b", "c", "d"} {
			if err := Append(ctx, tx, controlevent.Event{EventID: id, Type: "t", CreatedAt: time.Now()}); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		p := &Pump{db: db, dia: dialectOf(db)}
		rows, err := (&Pump{db: db, dia: dialectOf(db), cfg: Config{BatchSize: 10}}).loadPending(ctx, 0)
		if err != nil || len(rows) != 4 {
			t.Fatalf("loadPending = %d rows, %v; want 4", len(rows), err)
		}
		// Row "b" is published by someone else first (cv 99).
		if _, err := db.ExecContext(ctx, `UPDATE controlfeed_outbox SET published_control_version = 99 WHERE event_id = 'b'`); err != nil {
			t.Fatal(err)
		}
		stamped := []controlevent.Event{{EventID: "a", ControlVersion: 7}, {EventID: "b", ControlVersion: 8}, {EventID: "c", ControlVersion: 1 << 40}}
		if err := p.writeBack(ctx, rows[:3], stamped, nil, nil, nil, nil); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{"a": int64(7), "b": int64(99), "c": int64(1 << 40), "d": nil}
		for id, w := range want {
			var cv any
			var attempts int
			if err := db.QueryRowContext(ctx, `SELECT published_control_version, attempt_count FROM controlfeed_outbox WHERE event_id = $1`, id).Scan(&cv, &attempts); err != nil {
				t.Fatal(err)
			}
			if cv != w {
				t.Errorf("row %s: published_control_version %v, want %v", id, cv, w)
			}
			if wantAttempts := map[string]int{"a": 1, "c": 1}[id]; attempts != wantAttempts {
				t.Errorf("row %s: attempt_count %d, want %d", id, attempts, wantAttempts)
			}
		}
		if got := publishedPairs(rows[:2], stamped[:2]); got != `[[1,7],[2,8]]` {
			t.Errorf("publishedPairs = %s", got)
		}
	})
}

// TestWriteBack_Runs: rows whose ids and ControlVersions both ascend by one
// are recorded by a range statement per run, a chunk with more than
// maxRangeRuns runs by the JSON statement; both record every row's own
// ControlVersion and nothing else.
func TestWriteBack_Runs(t *testing.T) {
	ForEachDB(t, func(t *testing.T, tdb TestDB) {
		rows := func(ids ...int64) []pendingRow {
			out := make([]pendingRow, len(ids))
			for i, id := range ids {
				out[i] = pendingRow{id: id, eventID: "e" + strconv.FormatInt(id, 10)}
			}
			return out
		}
		cvs := func(vs ...uint64) []controlevent.Event {
			out := make([]controlevent.Event, len(vs))
			for i, v := range vs {
				out[i].ControlVersion = v
			}
			return out
		}
		for _, tc := range []struct {
			ids  []int64
			cvs  []uint64
			runs []run
		}{
			{[]int64{1, 2, 3}, []uint64{10, 11, 12}, []run{{0, 3}}},
			{[]int64{1, 2, 4, 5}, []uint64{10, 11, 12, 13}, []run{{0, 2}, {2, 4}}}, // id gap (a dead row)
			{[]int64{1, 2, 3}, []uint64{10, 12, 13}, []run{{0, 1}, {1, 3}}},        // cv gap (another publisher)
			{[]int64{7}, []uint64{3}, []run{{0, 1}}},
		} {
			got := consecutiveRuns(rows(tc.ids...), cvs(tc.cvs...))
			if fmt.Sprint(got) != fmt.Sprint(tc.runs) {
				t.Errorf("consecutiveRuns(%v, %v) = %v, want %v", tc.ids, tc.cvs, got, tc.runs)
			}
		}

		for _, tc := range []struct {
			name string
			cvs  []uint64 // for rows 1..10; 0 = not published by this chunk
		}{
			{"one run", []uint64{5, 6, 7, 8, 9, 10, 11, 12, 13, 14}},
			{"few runs", []uint64{5, 6, 0, 20, 21, 22, 0, 0, 40, 41}},
			{"many runs (JSON)", []uint64{5, 7, 9, 11, 13, 15, 17, 19, 21, 23}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ctx := context.Background()
				db, _ := tdb.Open(t)
				for i := 1; i <= 11; i++ {
					if _, err := db.ExecContext(ctx, appendInsert, "e"+strconv.Itoa(i), "t", "", "", "", "{}", "now"); err != nil {
						t.Fatal(err)
					}
				}
				var pub []pendingRow
				var st []controlevent.Event
				for i, cv := range tc.cvs {
					if cv != 0 {
						pub = append(pub, rows(int64(i+1))...)
						st = append(st, cvs(cv)...)
					}
				}
				p := &Pump{db: db, dia: dialectOf(db)}
				if err := p.writeBack(ctx, pub, st, nil, nil, nil, nil); err != nil {
					t.Fatal(err)
				}
				for i := 1; i <= 11; i++ {
					var cv sql.NullInt64
					var attempts int
					var at sql.NullString
					if err := db.QueryRowContext(ctx, `SELECT published_control_version, attempt_count, published_at FROM controlfeed_outbox WHERE id = $1`, i).Scan(&cv, &attempts, &at); err != nil {
						t.Fatal(err)
					}
					want := uint64(0)
					if i <= len(tc.cvs) {
						want = tc.cvs[i-1]
					}
					if uint64(cv.Int64) != want || cv.Valid != (want != 0) || at.Valid != (want != 0) || attempts != map[bool]int{true: 1}[want != 0] {
						t.Errorf("row %d: control_version %v, published_at %v, attempts %d; want %d", i, cv, at, attempts, want)
					}
				}
			})
		}
	})
}
