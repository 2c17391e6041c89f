package trust

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
)

// Event types of key management through the feed. A producer publishes them
// like any change (through its outbox, so its pump signs them with a key the
// nodes already trust); a node that verifies applies them itself, in its
// apply transaction, to the keys it trusts besides its configured ones. A
// node that does not verify records them and changes nothing, so it cannot
// learn a key from an unverified feed.
const (
	// TypeAddKey: trust the key in the event's KeyMember from the event's
	// position on.
	TypeAddKey = "controlfeed.trust.add_key"
	// TypeRevokeKey: stop trusting the key named by the event's Key,
	// configured or learned, from the event's position on.
	TypeRevokeKey = "controlfeed.trust.revoke_key"
)

// KeyMember is the extra member of a TypeAddKey event holding the public
// key: {"kid":"ed25519:…","key":"<base64>"}.
const KeyMember = "controlfeed_key"

// IsKeyEvent reports whether typ is one of the key management types.
func IsKeyEvent(typ string) bool { return typ == TypeAddKey || typ == TypeRevokeKey }

type wireKey struct {
	KeyID string `json:"kid"`
	Key   string `json:"key"`
}

// AddKeyEvent returns an unpublished event announcing k: its Key is k's id
// and KeyMember carries the public key.
func AddKeyEvent(k PublicKey, now time.Time) (controlevent.Event, error) {
	x, err := controlevent.EncodeExtra(map[string]any{KeyMember: wireKey{KeyID: k.ID, Key: base64.StdEncoding.EncodeToString(k.Key)}})
	if err != nil {
		return controlevent.Event{}, fmt.Errorf("trust: add-key event for %s: %w", k.ID, err)
	}
	return controlevent.Event{EventID: controlevent.NewEventID(), Type: TypeAddKey, Key: k.ID, CreatedAt: now.UTC(), Extra: x}, nil
}

// RevokeKeyEvent returns an unpublished event revoking the key kid.
func RevokeKeyEvent(kid string, now time.Time) (controlevent.Event, error) {
	if len(kid) != len(keyIDPrefix)+keyIDHexLen || kid[:len(keyIDPrefix)] != keyIDPrefix {
		return controlevent.Event{}, fmt.Errorf("trust: revoke-key event: %.80q is not a key id (%s<16 hex digits>)", kid, keyIDPrefix)
	}
	return controlevent.Event{EventID: controlevent.NewEventID(), Type: TypeRevokeKey, Key: kid, CreatedAt: now.UTC()}, nil
}

// ParseKeyEvent returns the key an add-key event announces (checked: the id
// derives from the key and equals the event's Key), or, for a revoke-key
// event, a PublicKey with only ID set.
func ParseKeyEvent(e controlevent.Event) (PublicKey, error) {
	switch e.Type {
	case TypeRevokeKey:
		if len(e.Key) != len(keyIDPrefix)+keyIDHexLen || e.Key[:len(keyIDPrefix)] != keyIDPrefix {
			return PublicKey{}, fmt.Errorf("trust: revoke-key event %.80q: key %.80q is not a key id", e.EventID, e.Key)
		}
		return PublicKey{ID: e.Key}, nil
	case TypeAddKey:
	default:
		return PublicKey{}, fmt.Errorf("trust: event %.80q of type %.80q is not a key event", e.EventID, e.Type)
	}
	raw, ok := e.ExtraField(KeyMember)
	if !ok {
		return PublicKey{}, fmt.Errorf("trust: add-key event %.80q has no %s member", e.EventID, KeyMember)
	}
	var wk wireKey
	if err := json.Unmarshal(raw, &wk); err != nil {
		return PublicKey{}, fmt.Errorf("trust: add-key event %.80q: %s is not {kid,key}: %v", e.EventID, KeyMember, err)
	}
	k, err := publicFrom(wk.KeyID, wk.Key)
	if err != nil {
		return PublicKey{}, fmt.Errorf("trust: add-key event %.80q: %w", e.EventID, err)
	}
	if k.ID != e.Key {
		return PublicKey{}, fmt.Errorf("trust: add-key event %.80q: key is %s but the event's key field says %.80q", e.EventID, k.ID, e.Key)
	}
	return k, nil
}

// With returns a copy of kr that also trusts keys.
func (kr *Keyring) With(keys ...PublicKey) *Keyring {
	out := &Keyring{keys: make(map[string]ed25519.PublicKey, len(kr.keys)+len(keys))}
	for id, k := range kr.keys {
		out.keys[id] = k
	}
	for _, k := range keys {
		out.keys[k.ID] = k.Key
	}
	return out
}

// Without returns a copy of kr that does not trust the keys ids.
func (kr *Keyring) Without(ids ...string) *Keyring {
	out := kr.With()
	for _, id := range ids {
		delete(out.keys, id)
	}
	return out
}

// Has reports whether kr trusts the key id.
func (kr *Keyring) Has(id string) bool {
	_, ok := kr.keys[id]
	return ok
}
