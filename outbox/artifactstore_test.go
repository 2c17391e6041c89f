package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/controlfeed/controlfeed/outbox"
)

func TestArtifactStore(t *testing.T) {
	ctx := context.Background()
	fileA := outbox.ArtifactStore{Backend: "file", Location: "/srv/a"}
	fileB := outbox.ArtifactStore{Backend: "file", Location: "/srv/b"}
	bucket := outbox.ArtifactStore{Backend: "jetstream", Location: "controlfeed-artifacts"}

	outbox.ForEachDB(t, func(t *testing.T, tdb outbox.TestDB) {
		t.Run("NoRecord", func(t *testing.T) {
			db, _ := tdb.Open(t)
			if _, _, ok, err := outbox.ReadArtifactStore(ctx, db); ok || err != nil {
				t.Fatalf("ReadArtifactStore = %v, %v; want none", ok, err)
			}
			if err := outbox.CheckArtifactStore(ctx, db, fileA); err != nil {
				t.Fatalf("CheckArtifactStore without a record = %v", err)
			}
			if exists(t, db) {
				t.Fatal("CheckArtifactStore created the table")
			}
		})
		t.Run("NotMigrated", func(t *testing.T) {
			db := tdb.New(t)(t) // no controlfeed tables at all
			if err := outbox.CheckArtifactStore(ctx, db, fileA); err != nil {
				t.Fatalf("CheckArtifactStore on an empty database = %v", err)
			}
		})
		t.Run("RecordThenCheck", func(t *testing.T) {
			db, reopen := tdb.Open(t)
			if err := outbox.RecordArtifactStore(ctx, db, fileA); err != nil {
				t.Fatal(err)
			}
			if err := outbox.RecordArtifactStore(ctx, db, fileA); err != nil {
				t.Fatalf("recording the same store again = %v", err)
			}
			db2 := reopen(t)
			got, at, ok, err := outbox.ReadArtifactStore(ctx, db2)
			if err != nil || !ok || got != fileA || at.IsZero() {
				t.Fatalf("ReadArtifactStore = %+v, %v, %v, %v; want %+v", got, at, ok, err, fileA)
			}
			if err := outbox.CheckArtifactStore(ctx, db2, fileA); err != nil {
				t.Fatalf("CheckArtifactStore(recorded) = %v", err)
			}
			for _, other := range []outbox.ArtifactStore{fileB, bucket} {
				err := outbox.CheckArtifactStore(ctx, db2, other)
				var me *outbox.ArtifactStoreMismatchError
				if !errors.Is(err, outbox.ErrArtifactStoreMismatch) || !errors.As(err, &me) || me.Recorded != fileA || me.Given != other {
					t.Fatalf("CheckArtifactStore(%+v) = %v; want a mismatch naming both", other, err)
				}
				for _, want := range []string{fileA.Location, other.Location, other.Backend, "DELETE FROM " + outbox.ArtifactStoreTable} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not name %q", err, want)
					}
				}
			}
		})
		t.Run("RecordRefusesAnother", func(t *testing.T) {
			db, _ := tdb.Open(t)
			if err := outbox.RecordArtifactStore(ctx, db, bucket); err != nil {
				t.Fatal(err)
			}
			err := outbox.RecordArtifactStore(ctx, db, fileA)
			if !errors.Is(err, outbox.ErrArtifactStoreMismatch) {
				t.Fatalf("RecordArtifactStore(another) = %v; want a mismatch", err)
			}
			if got, _, _, _ := outbox.ReadArtifactStore(ctx, db); got != bucket {
				t.Fatalf("the refused record changed the store to %+v", got)
			}
		})
		t.Run("DeleteChangesOnPurpose", func(t *testing.T) {
			db, _ := tdb.Open(t)
			if err := outbox.RecordArtifactStore(ctx, db, fileA); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, "DELETE FROM "+outbox.ArtifactStoreTable); err != nil {
				t.Fatal(err)
			}
			if err := outbox.RecordArtifactStore(ctx, db, fileB); err != nil {
				t.Fatalf("RecordArtifactStore after the documented DELETE = %v", err)
			}
		})
		t.Run("Race", func(t *testing.T) {
			db, reopen := tdb.Open(t)
			stores := []outbox.ArtifactStore{fileA, fileB, bucket, fileA, fileB, bucket}
			errs := make([]error, len(stores))
			var wg sync.WaitGroup
			for i, s := range stores {
				conn := db
				if i%2 == 1 {
					conn = reopen(t)
				}
				wg.Go(func() { errs[i] = outbox.RecordArtifactStore(ctx, conn, s) })
			}
			wg.Wait()
			got, _, ok, err := outbox.ReadArtifactStore(ctx, db)
			if err != nil || !ok {
				t.Fatalf("ReadArtifactStore = %v, %v", ok, err)
			}
			for i, s := range stores {
				switch {
				case s == got && errs[i] != nil:
					t.Errorf("recording the winning store %+v failed: %v", s, errs[i])
				case s != got && !errors.Is(errs[i], outbox.ErrArtifactStoreMismatch):
					t.Errorf("recording %+v while %+v won = %v; want a mismatch", s, got, errs[i])
				}
			}
		})
		t.Run("ErrEmpty", func(t *testing.T) {
			db, _ := tdb.Open(t)
			if err := outbox.RecordArtifactStore(ctx, db, outbox.ArtifactStore{Backend: "file"}); err == nil {
				t.Fatal("RecordArtifactStore with no location: no error")
			}
			if err := outbox.CheckArtifactStore(ctx, db, outbox.ArtifactStore{Location: "x"}); err == nil {
				t.Fatal("CheckArtifactStore with no backend: no error")
			}
		})
	})
}

// exists reports whether the record's table exists in db.
func exists(t *testing.T, db *sql.DB) bool {
	t.Helper()
	_, err := db.Exec("SELECT 1 FROM " + outbox.ArtifactStoreTable)
	return err == nil
}
