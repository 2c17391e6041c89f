package sqlitedb_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/controlfeed/controlfeed/internal/sqlitedb"
)

// TestOpen_ConcurrentCreate: several openers of a database that does not
// exist yet (a producer's serve and its first kv put, started together)
// all succeed; the loser of the switch to WAL used to get SQLITE_BUSY at
// once.
func TestOpen_ConcurrentCreate(t *testing.T) {
	dir := t.TempDir()
	for i := range 30 {
		path := filepath.Join(dir, fmt.Sprintf("p%d.db", i))
		var wg sync.WaitGroup
		errs := make(chan error, 6)
		for range 6 {
			wg.Go(func() {
				db, err := sqlitedb.Open(context.Background(), path)
				if err != nil {
					errs <- err
					return
				}
				db.Close()
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("open %s: %v", path, err)
		}
	}
}
