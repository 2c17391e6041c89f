package snapshot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/trust"
)

// ErrUntrusted is wrapped (through *SignatureError) when Restore is given
// trusted keys (RestoreOptions.TrustedKeys) and the snapshot is not
// signed, is signed by a key not among them, has a signature that does not
// verify, or its database does not hold the chain head the signature
// vouches for. Nothing was changed; retrying does not help: restore a
// snapshot signed by a trusted key.
var ErrUntrusted = errors.New("snapshot is not vouched for by a trusted key")

// ErrChainMismatch is wrapped (through *SignatureError, with ErrUntrusted)
// when a signed snapshot's database holds another trust chain head than
// the one its manifest's signature covers: the database was swapped, or the
// signer vouched for the wrong file.
var ErrChainMismatch = errors.New("the database's chain head is not the signed one")

// Reasons of a SignatureError, stable names for logs and tests.
const (
	// ReasonUnsigned: the manifest carries no signature.
	ReasonUnsigned = "unsigned"
	// ReasonUnknownKey: signed, but by no key Restore was given.
	ReasonUnknownKey = "unknown-key"
	// ReasonBadSignature: a trusted key's signature that does not verify
	// over the stored manifest, or a manifest that differs from what its
	// signature covers.
	ReasonBadSignature = "bad-signature"
	// ReasonMalformed: a signed envelope of the wrong type or shape.
	ReasonMalformed = "malformed-signature"
	// ReasonChainMismatch: the signature verifies, but the database's
	// chain head is not the signed one.
	ReasonChainMismatch = "chain-mismatch"
)

// SignatureError is why Restore refused a snapshot that trusted keys do
// not vouch for. errors.Is matches ErrUntrusted, trust.ErrSecurity, the
// matching trust sentinel (trust.ErrUnsigned, trust.ErrUnknownKey,
// trust.ErrBadSignature, trust.ErrMalformed) and, for ReasonChainMismatch,
// ErrChainMismatch.
type SignatureError struct {
	// Manifest is the manifest's artifact reference.
	Manifest string
	// Reason is one of the Reason* constants.
	Reason string
	// KeyID is the key the manifest names as its signer, "" when unsigned.
	KeyID string
	// Trusted lists the trusted key ids.
	Trusted []string
	// Detail says what was found (no secrets: key ids and digests are
	// public).
	Detail string
}

// Error names the snapshot, the key and the reason, and says what to do.
func (e *SignatureError) Error() string {
	key := e.KeyID
	if key == "" {
		key = "none"
	}
	var hint string
	switch e.Reason {
	case ReasonUnsigned:
		hint = "this node restores only signed snapshots: publish one signed with a key it trusts, or pick a signed one from the catalog"
	case ReasonUnknownKey:
		hint = "if " + e.KeyID + " is your snapshot key, trust its public key here; otherwise find out who published this snapshot"
	case ReasonChainMismatch:
		hint = "do not use it: the database is not the one the signer vouched for; find out who wrote the artifact store, and publish a new snapshot from a healthy node"
	default:
		hint = "do not use it: the manifest was altered after signing or the signature forged; find out who wrote it, and publish a new snapshot from a healthy node"
	}
	return fmt.Sprintf("snapshot: manifest %s: not restored: %s (%s; signing key %s; trusted: %s): %s: %v; %s",
		e.Manifest, e.Detail, e.Reason, key, strings.Join(e.Trusted, ", "), e.sentinel(), ErrUntrusted, hint)
}

func (e *SignatureError) sentinel() error {
	switch e.Reason {
	case ReasonUnsigned:
		return trust.ErrUnsigned
	case ReasonUnknownKey:
		return trust.ErrUnknownKey
	case ReasonMalformed:
		return trust.ErrMalformed
	case ReasonChainMismatch:
		return ErrChainMismatch
	}
	return trust.ErrBadSignature
}

// Is reports whether target is ErrUntrusted, trust.ErrSecurity or the
// reason's sentinel.
func (e *SignatureError) Is(target error) bool {
	return target == ErrUntrusted || target == trust.ErrSecurity || target == e.sentinel()
}

// Verify checks that a key of kr signed m: m must have been decoded from a
// signed envelope (Decode, Load), carry a signature by a key in kr that
// verifies over the stored payload, and equal that payload. It returns the
// verifying key's id. Every failure is a *SignatureError. The chain head
// is checked against the database by Restore, once it is downloaded.
func (m Manifest) Verify(kr *trust.Keyring) (string, error) {
	fail := func(reason, key, format string, args ...any) (string, error) {
		return "", &SignatureError{Manifest: m.Ref, Reason: reason, KeyID: key, Trusted: kr.IDs(), Detail: fmt.Sprintf(format, args...)}
	}
	if m.envelope == nil {
		return fail(ReasonUnsigned, "", "the manifest is not signed")
	}
	payload, kid, err := kr.VerifyEnvelope(*m.envelope, trust.ManifestPayloadType)
	if err != nil {
		var se *trust.SecurityError
		reason := ReasonMalformed
		if errors.As(err, &se) {
			switch se.Reason {
			case trust.ReasonUnsigned:
				reason = ReasonUnsigned
			case trust.ReasonUnknownKey:
				reason = ReasonUnknownKey
			case trust.ReasonBadSignature:
				reason = ReasonBadSignature
			}
		}
		detail := "the signature does not verify"
		switch {
		case reason == ReasonUnknownKey:
			detail = "signed by a key this node does not trust" // the key ids follow in Error
		case se != nil:
			detail = se.Detail
		}
		return fail(reason, m.SignedBy, "%s", detail)
	}
	signed, err := decodePlain(payload, m.Ref)
	if err != nil {
		return fail(ReasonMalformed, kid, "the signed payload is not a manifest: %v", err)
	}
	if what := differs(signed, m); what != "" {
		return fail(ReasonBadSignature, kid, "the manifest's %s differs from the signed one", what)
	}
	return kid, nil
}

// differs names the first field in which a and b differ, "" if none.
func differs(a, b Manifest) string {
	switch {
	case a.Kind != b.Kind || a.Format != b.Format:
		return "kind or format"
	case a.Database != b.Database:
		return "database"
	case !maps.Equal(a.Schemas, b.Schemas):
		return "schemas"
	case a.ControlVersion != b.ControlVersion:
		return "control_version"
	case a.AppliedEvents != b.AppliedEvents:
		return "applied_events"
	case a.Node != b.Node || !a.CreatedAt.Equal(b.CreatedAt):
		return "node or created_at"
	case a.chainHead() != b.chainHead():
		return "chain head"
	}
	return ""
}

// stored returns the bytes Create stores for m: its JSON, or with key a
// DSSE envelope (trust.ManifestPayloadType) of that JSON signed by key, in
// which case m's SignedBy and envelope are set.
func (m *Manifest) stored(key *trust.PrivateKey) ([]byte, error) {
	b, err := m.Encode()
	if err != nil || key == nil {
		return b, err
	}
	env := trust.SignEnvelope(key, trust.ManifestPayloadType, b)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(env); err != nil {
		return nil, fmt.Errorf("snapshot: encode signed manifest: %w", err)
	}
	m.envelope, m.SignedBy = &env, key.ID()
	return buf.Bytes(), nil
}

// readChainHead returns the trust chain head stored with the cursor of a
// node database, the zero Head when its cursor row predates it (applier
// schema below 4).
func readChainHead(ctx context.Context, q querier) (trust.Head, error) {
	var n int
	if err := q.QueryRowContext(ctx, `SELECT count(*) FROM pragma_table_info('controlfeed_cursor') WHERE name = 'trust_seq'`).Scan(&n); err != nil {
		return trust.Head{}, fmt.Errorf("look for the chain head column: %w", err)
	}
	if n == 0 {
		return trust.Head{}, nil
	}
	return applier.ReadTrustHead(ctx, q)
}

// chainOf is the manifest form of h: nil for the zero head.
func chainOf(h trust.Head) *ChainHead {
	if h.IsZero() {
		return nil
	}
	return &ChainHead{Seq: h.Seq, Digest: h.Digest}
}
