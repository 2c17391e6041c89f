package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/controlfeed/controlfeed/trust"
)

// ErrSignerRevoked is wrapped by CheckSigner's error: the producer is about
// to sign with a key its own outbox revoked.
var ErrSignerRevoked = errors.New("outbox: the signing key is revoked")

// CheckSigner returns an error wrapping ErrSignerRevoked when the outbox in
// db holds a revocation of the key kid (a trust.TypeRevokeKey row, pending
// or published) with no later announcement of it (trust.TypeAddKey): every
// verifying node stops trusting kid at the revocation, so a pump signing
// with it from then on would only halt the fleet (unknown-key). A producer
// calls it before its pump starts. It reads only; rows the pump has pruned
// (Config.Retention) are not seen, so it catches the mistake of restarting
// on the old key after a rotation, not a revocation older than the
// retention. The ErrSignerRevoked error names the row and what to do.
func CheckSigner(ctx context.Context, db *sql.DB, kid string) error {
	var (
		typ, eventID string
		id           int64
	)
	err := db.QueryRowContext(ctx, `SELECT id, type, event_id FROM controlfeed_outbox
		WHERE type IN ($1, $2) AND "key" = $3 ORDER BY id DESC LIMIT 1`,
		trust.TypeAddKey, trust.TypeRevokeKey, kid).Scan(&id, &typ, &eventID)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("outbox: check the signing key %s against the outbox's key revocations: %w", kid, err)
	case typ == trust.TypeRevokeKey:
		return fmt.Errorf("%w: outbox row %d (event %s) revokes %s, and the fleet's verifying nodes refuse what it signs from there on; sign with the key that replaced it (announced with \"controlfeed keys announce\"); if the revocation was a mistake, announce %s again from a producer that signs with another trusted key",
			ErrSignerRevoked, id, eventID, kid, kid)
	}
	return nil
}
