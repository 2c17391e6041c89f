package applier

import (
	"context"
	"database/sql"
	"encoding/base64"
	"fmt"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/trust"
)

// handler returns the Handler of an event type: the configured one, or the
// applier's own for the key management types of package trust.
func (a *Applier) handler(typ string) Handler {
	if trust.IsKeyEvent(typ) {
		return a.applyKeyEvent
	}
	return a.cfg.Handlers[typ]
}

// applyKeyEvent applies a trust.TypeAddKey or TypeRevokeKey event inside the
// apply transaction: controlfeed_trust_keys learns or revokes the key from
// the event's position on. Without Config.Keyring it changes nothing: a node
// that does not verify cannot tell a real announcement from a forged one, so
// it must not remember keys it would trust once verification is turned on.
func (a *Applier) applyKeyEvent(ctx context.Context, tx *sql.Tx, ev controlevent.Event, _ []byte) error {
	if a.cfg.Keyring == nil {
		return nil
	}
	k, err := trust.ParseKeyEvent(ev)
	if err != nil {
		return err
	}
	cv := int64(ev.ControlVersion)
	switch ev.Type {
	case trust.TypeAddKey:
		_, err = tx.ExecContext(ctx, `INSERT INTO controlfeed_trust_keys (kid, public_key, added_cv, revoked_cv) VALUES (?, ?, ?, 0)
			ON CONFLICT (kid) DO UPDATE SET public_key = excluded.public_key, added_cv = excluded.added_cv, revoked_cv = 0`,
			k.ID, base64.StdEncoding.EncodeToString(k.Key), cv)
		a.log.Warn("applier: the feed adds a trusted key", "kid", k.ID, "event_id", ev.EventID, "control_version", ev.ControlVersion)
	case trust.TypeRevokeKey:
		_, err = tx.ExecContext(ctx, `INSERT INTO controlfeed_trust_keys (kid, public_key, added_cv, revoked_cv) VALUES (?, '', ?, ?)
			ON CONFLICT (kid) DO UPDATE SET revoked_cv = excluded.revoked_cv`, k.ID, cv, cv)
		a.log.Warn("applier: the feed revokes a key", "kid", k.ID, "event_id", ev.EventID, "control_version", ev.ControlVersion)
	}
	if err != nil {
		return fmt.Errorf("record key %s: %w", k.ID, err)
	}
	return nil
}

// TrustedKey is a key the feed added to or revoked from a node's keyring.
type TrustedKey struct {
	KeyID     string
	PublicKey string // base64; "" for a revoked key the feed never added
	// AddedAt and RevokedAt are the control versions of the events that
	// added and revoked it (0: never).
	AddedAt, RevokedAt uint64
}

// ReadTrustedKeys returns the keys the feed added or revoked on this node
// (controlfeed_trust_keys), ordered by key id.
func ReadTrustedKeys(ctx context.Context, db *sql.DB) ([]TrustedKey, error) {
	rows, err := db.QueryContext(ctx, `SELECT kid, public_key, added_cv, revoked_cv FROM controlfeed_trust_keys ORDER BY kid`)
	if err != nil {
		return nil, fmt.Errorf("applier: read trusted keys: %w", err)
	}
	defer rows.Close()
	var out []TrustedKey
	for rows.Next() {
		var k TrustedKey
		var added, revoked int64
		if err := rows.Scan(&k.KeyID, &k.PublicKey, &added, &revoked); err != nil {
			return nil, fmt.Errorf("applier: read trusted keys: %w", err)
		}
		k.AddedAt, k.RevokedAt = uint64(added), uint64(revoked)
		out = append(out, k)
	}
	return out, rows.Err()
}

// trustState returns the chain head and the keyring of this round, reading
// them from the database when they changed (or at the first round).
func (a *Applier) trustState(ctx context.Context) (trust.Head, *trust.Keyring, error) {
	if a.trustHead == nil {
		h, err := ReadTrustHead(ctx, a.db)
		if err != nil {
			return h, nil, err
		}
		a.trustHead = &h
	}
	if a.ring == nil {
		keys, err := ReadTrustedKeys(ctx, a.db)
		if err != nil {
			return trust.Head{}, nil, err
		}
		ring := a.cfg.Keyring
		for _, k := range keys {
			if k.RevokedAt != 0 {
				ring = ring.Without(k.KeyID)
				continue
			}
			pk, err := trust.ParseTrustSpec(k.KeyID + "=" + k.PublicKey)
			if err != nil {
				return trust.Head{}, nil, fmt.Errorf("applier: trusted key %s in controlfeed_trust_keys: %w", k.KeyID, err)
			}
			ring = ring.With(pk)
		}
		a.ring = ring
	}
	return *a.trustHead, a.ring, nil
}
