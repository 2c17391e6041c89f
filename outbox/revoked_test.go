package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/outbox"
	"github.com/controlfeed/controlfeed/trust"
)

// TestCheckSigner: a key is refused once the outbox revokes it, usable
// again after a later announcement, and other keys are unaffected; on
// every dialect.
func TestCheckSigner(t *testing.T) {
	outbox.OpenEach(t, func(t *testing.T, db *sql.DB) {
		ctx := context.Background()
		k, err := trust.GenerateKey(nil)
		if err != nil {
			t.Fatal(err)
		}
		other, _ := trust.GenerateKey(nil)
		add := func(e controlevent.Event) {
			t.Helper()
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := outbox.Append(ctx, tx, e); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
		}
		if err := outbox.CheckSigner(ctx, db, k.ID()); err != nil {
			t.Fatalf("empty outbox: %v", err)
		}
		rev, _ := trust.RevokeKeyEvent(k.ID(), time.Now())
		add(rev)
		err = outbox.CheckSigner(ctx, db, k.ID())
		if !errors.Is(err, outbox.ErrSignerRevoked) || !strings.Contains(err.Error(), rev.EventID) {
			t.Fatalf("after the revocation: %v; want ErrSignerRevoked naming %s", err, rev.EventID)
		}
		if err := outbox.CheckSigner(ctx, db, other.ID()); err != nil {
			t.Errorf("another key: %v", err)
		}
		again, _ := trust.AddKeyEvent(k.Public(), time.Now())
		add(again)
		if err := outbox.CheckSigner(ctx, db, k.ID()); err != nil {
			t.Errorf("after announcing it again: %v", err)
		}
	})
}
