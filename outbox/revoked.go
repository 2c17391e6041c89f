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

// KeyUse is what a producer database's outbox knows of one key: whether the
// pump's last published signed event was signed by it (the chain head the
// pump keeps, at seq LastSeq), and whether an outbox row announces or
// revokes it (a key event the pump has not pruned).
type KeyUse struct {
	SignedLast bool
	LastSeq    uint64
	InKeyEvent bool
}

// ReadKeyUse returns what db's outbox knows of the key kid (see KeyUse). It
// reads only. "keys revoke" calls it to refuse revoking the key the pump
// still signs with, and to warn about an id nothing in the outbox names (a
// typo revokes nothing).
func ReadKeyUse(ctx context.Context, db *sql.DB, kid string) (KeyUse, error) {
	var u KeyUse
	var signer string
	err := db.QueryRowContext(ctx, `SELECT seq, key_id FROM controlfeed_outbox_chain WHERE id = 1`).Scan(&u.LastSeq, &signer)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		u.LastSeq = 0
	case err != nil:
		return u, fmt.Errorf("outbox: read the key that signed the last published event: %w", err)
	default:
		u.SignedLast = signer == kid
	}
	var one int
	err = db.QueryRowContext(ctx, `SELECT 1 FROM controlfeed_outbox WHERE type IN ($1, $2) AND "key" = $3 LIMIT 1`,
		trust.TypeAddKey, trust.TypeRevokeKey, kid).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return u, fmt.Errorf("outbox: look up the key events of %s: %w", kid, err)
	default:
		u.InKeyEvent = true
	}
	return u, nil
}
