package dbrole_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/controlfeed/controlfeed/dbrole"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
)

func TestRecord(t *testing.T) {
	ctx := context.Background()
	db, err := sqlitedb.Open(ctx, filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if r, err := dbrole.Get(ctx, db); r != dbrole.None || err != nil {
		t.Fatalf("Get on a new database = %q, %v", r, err)
	}
	var n int
	db.QueryRow(`SELECT count(*) FROM sqlite_master`).Scan(&n)
	if err := dbrole.Check(ctx, db, dbrole.Node); err != nil || n != 0 {
		t.Fatalf("Check on a new database = %v; %d tables (Get and Check must not create any)", err, n)
	}
	for range 2 { // idempotent
		if err := dbrole.Record(ctx, db, dbrole.Producer); err != nil {
			t.Fatal(err)
		}
	}
	if err := dbrole.CheckLocalWrite(ctx, db); err != nil {
		t.Errorf("CheckLocalWrite on a producer's database: %v", err)
	}
	err = dbrole.Record(ctx, db, dbrole.Node)
	if err == nil || !strings.Contains(err.Error(), "recorded as a producer's database") || !strings.Contains(err.Error(), "DELETE FROM controlfeed_role") {
		t.Errorf("Record(Node) on a producer's database: %v", err)
	}
	if r, _ := dbrole.Get(ctx, db); r != dbrole.Producer {
		t.Errorf("role after a refused Record = %q", r)
	}
	if err := dbrole.Record(ctx, db, "relay"); err == nil {
		t.Error("Record of an unknown role succeeded")
	}
}
