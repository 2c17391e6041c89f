package snapshot_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/kv"
	"github.com/controlfeed/controlfeed/snapshot"
	"github.com/controlfeed/controlfeed/trust"
	"github.com/controlfeed/controlfeed/trust/trusttest"
)

// newSignedFleet is a fleet whose producer signs every event with key and
// whose node verifies them against kr.
func newSignedFleet(t testing.TB, key *trust.PrivateKey, kr *trust.Keyring) *fleet {
	t.Helper()
	f := newFleet(t, newStore(t))
	f.key = key
	f.app = newVerifyingApplier(t, f.node, f.src, f.store, kr)
	return f
}

func newVerifyingApplier(t testing.TB, db *sql.DB, src *fakeSource, store artifact.Store, kr *trust.Keyring) *applier.Applier {
	t.Helper()
	a, err := applier.New(db, src, store, &applier.Config{Handlers: kv.Handlers(), MaxBatch: 16, Keyring: kr})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestSigned_BootstrapPastRetention: a verifying node restored from a
// signed snapshot, on a feed that no longer holds the events before it,
// verifies and applies the next signed events from the snapshot's chain
// head, without a halt, and ends in the producer's state.
func TestSigned_BootstrapPastRetention(t *testing.T) {
	ctx := context.Background()
	prod, snapKey := trusttest.Key(t, 1), trusttest.Key(t, 2)
	kr := trusttest.Keyring(t, prod, snapKey)
	f := newSignedFleet(t, prod, kr)
	f.publish(40)
	f.catchUp()

	m, err := snapshot.Create(ctx, f.node, f.store, &snapshot.CreateOptions{Node: "n1", SigningKey: snapKey})
	if err != nil {
		t.Fatal(err)
	}
	if m.SignedBy != snapKey.ID() {
		t.Fatalf("SignedBy %q, want %s", m.SignedBy, snapKey.ID())
	}
	if m.Chain == nil || (trust.Head{Seq: m.Chain.Seq, Digest: m.Chain.Digest}) != f.head {
		t.Fatalf("manifest chain head %+v, want the producer's %+v", m.Chain, f.head)
	}
	f.publish(25)

	// The feed's retention dropped everything the snapshot covers.
	retained := &fakeSource{}
	for _, e := range f.src.events {
		if e.ControlVersion > m.ControlVersion {
			retained.events = append(retained.events, e)
		}
	}
	target := filepath.Join(t.TempDir(), "joiner.db")
	loaded, err := snapshot.RestoreRef(ctx, f.store, m.Ref, target, &snapshot.RestoreOptions{TrustedKeys: kr})
	if err != nil {
		t.Fatal(err)
	}
	if loaded.SignedBy != snapKey.ID() || loaded.Chain == nil || *loaded.Chain != *m.Chain {
		t.Fatalf("loaded manifest signed by %q with chain %+v, want %s and %+v", loaded.SignedBy, loaded.Chain, snapKey.ID(), m.Chain)
	}
	joiner := openNode(t, target)
	a := newVerifyingApplier(t, joiner, retained, f.store, kr)
	for {
		n, err := a.Step(ctx)
		if err != nil {
			t.Fatalf("the restored node stopped: %v (status %+v)", err, a.Status())
		}
		if n == 0 {
			break
		}
	}
	f.catchUp()
	if got, want := cursor(t, joiner), cursor(t, f.node); got != want || got != 65 {
		t.Fatalf("restored node at cursor %d, the up-to-date node at %d, want 65", got, want)
	}
	head, err := applier.ReadTrustHead(ctx, joiner)
	if err != nil || head != f.head {
		t.Fatalf("restored node's chain head %+v (%v), want the producer's %+v", head, err, f.head)
	}
	if digest(t, joiner) != digest(t, f.node) {
		t.Fatal("the restored node's state differs from the node that replayed the feed")
	}
}

// restoreErr restores the stored manifest ref into a new path with kr and
// returns the error, checking that the target was not created.
func restoreErr(t *testing.T, store artifact.Store, ref string, kr *trust.Keyring) error {
	t.Helper()
	target := filepath.Join(t.TempDir(), "node.db")
	_, err := snapshot.RestoreRef(context.Background(), store, ref, target, &snapshot.RestoreOptions{TrustedKeys: kr})
	if err != nil {
		if _, serr := os.Stat(target); serr == nil {
			t.Fatalf("refused restore created %s", target)
		}
	}
	return err
}

// envelopeOf returns the stored signed manifest ref and its envelope.
func envelopeOf(t *testing.T, store artifact.Store, ref string) trust.Envelope {
	t.Helper()
	b, err := artifact.GetBytes(context.Background(), store, ref, snapshot.MaxManifestSize)
	if err != nil {
		t.Fatal(err)
	}
	env, err := trust.ParseEnvelope(b)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func putJSON(t *testing.T, store artifact.Store, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := artifact.PutBytes(context.Background(), store, b)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// editPayload returns the manifest JSON of env with edit applied.
func editPayload(t *testing.T, env trust.Envelope, edit func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(env.Payload, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSigned_Refusals: a verifying restore refuses every snapshot its keys
// do not vouch for, each with its own reason naming the snapshot and the
// key, and creates nothing; a restore without keys behaves as before.
func TestSigned_Refusals(t *testing.T) {
	ctx := context.Background()
	prod, snapKey, stranger := trusttest.Key(t, 1), trusttest.Key(t, 2), trusttest.Key(t, 3)
	kr := trusttest.Keyring(t, prod, snapKey)
	f := newSignedFleet(t, prod, kr)
	f.publish(30)
	f.catchUp()
	older, err := snapshot.Create(ctx, f.node, f.store, &snapshot.CreateOptions{SigningKey: snapKey})
	if err != nil {
		t.Fatal(err)
	}
	f.publish(10)
	f.catchUp()
	good, err := snapshot.Create(ctx, f.node, f.store, &snapshot.CreateOptions{SigningKey: snapKey})
	if err != nil {
		t.Fatal(err)
	}
	unsigned, err := snapshot.Create(ctx, f.node, f.store, nil)
	if err != nil {
		t.Fatal(err)
	}
	byStranger, err := snapshot.Create(ctx, f.node, f.store, &snapshot.CreateOptions{SigningKey: stranger})
	if err != nil {
		t.Fatal(err)
	}
	env := envelopeOf(t, f.store, good.Ref)
	olderEnv := envelopeOf(t, f.store, older.Ref)

	// Stored tampering: the payload edited under the original signature.
	tampered := func(edit func(m map[string]any)) string {
		e := env
		e.Payload = editPayload(t, env, edit)
		return putJSON(t, f.store, e)
	}
	cvChanged := tampered(func(m map[string]any) { m["control_version"] = float64(older.ControlVersion) })
	chainChanged := tampered(func(m map[string]any) {
		m["chain"] = map[string]any{"seq": 7, "digest": "sha256:" + strings.Repeat("0", 64)}
	})
	dbSwapped := tampered(func(m map[string]any) {
		var o map[string]any
		json.Unmarshal(olderEnv.Payload, &o)
		m["database"] = o["database"]
	})
	// A trusted key vouching for a chain head its database does not hold.
	lying := good
	lying.Chain = &snapshot.ChainHead{Seq: older.Chain.Seq, Digest: older.Chain.Digest}
	b, err := lying.Encode()
	if err != nil {
		t.Fatal(err)
	}
	lyingRef := putJSON(t, f.store, trust.SignEnvelope(snapKey, trust.ManifestPayloadType, b))
	wrongType := putJSON(t, f.store, trust.SignEnvelope(snapKey, "application/vnd.example", env.Payload))

	for _, c := range []struct {
		name, ref, reason, key string
		sentinel               error
	}{
		{"unsigned", unsigned.Ref, snapshot.ReasonUnsigned, "", trust.ErrUnsigned},
		{"unknown key", byStranger.Ref, snapshot.ReasonUnknownKey, stranger.ID(), trust.ErrUnknownKey},
		{"control_version changed", cvChanged, snapshot.ReasonBadSignature, snapKey.ID(), trust.ErrBadSignature},
		{"chain head changed", chainChanged, snapshot.ReasonBadSignature, snapKey.ID(), trust.ErrBadSignature},
		{"database swapped", dbSwapped, snapshot.ReasonBadSignature, snapKey.ID(), trust.ErrBadSignature},
		{"signed chain head not the database's", lyingRef, snapshot.ReasonChainMismatch, snapKey.ID(), snapshot.ErrChainMismatch},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := restoreErr(t, f.store, c.ref, kr)
			var se *snapshot.SignatureError
			if !errors.As(err, &se) || !errors.Is(err, snapshot.ErrUntrusted) || !errors.Is(err, trust.ErrSecurity) || !errors.Is(err, c.sentinel) {
				t.Fatalf("restore: %v, want a *SignatureError wrapping ErrUntrusted and %v", err, c.sentinel)
			}
			if se.Reason != c.reason || se.KeyID != c.key || se.Manifest != c.ref {
				t.Fatalf("refusal %q key %q manifest %s, want %q, %q, %s", se.Reason, se.KeyID, se.Manifest, c.reason, c.key, c.ref)
			}
			for _, want := range []string{c.ref, c.reason, snapKey.ID()} {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("message %q does not name %q", err, want)
				}
			}
		})
	}
	t.Run("wrong payload type", func(t *testing.T) {
		if err := restoreErr(t, f.store, wrongType, kr); !errors.Is(err, snapshot.ErrIncompatible) {
			t.Fatalf("restore: %v, want ErrIncompatible", err)
		}
	})
	t.Run("altered in memory", func(t *testing.T) {
		m, err := snapshot.Load(ctx, f.store, good.Ref)
		if err != nil {
			t.Fatal(err)
		}
		m.ControlVersion--
		err = snapshot.Restore(ctx, f.store, m, filepath.Join(t.TempDir(), "n.db"), &snapshot.RestoreOptions{TrustedKeys: kr})
		if !errors.Is(err, trust.ErrBadSignature) || !strings.Contains(err.Error(), "control_version") {
			t.Fatalf("restore of an altered manifest: %v, want bad-signature naming control_version", err)
		}
	})
	t.Run("good one restores", func(t *testing.T) {
		if err := restoreErr(t, f.store, good.Ref, kr); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("without keys", func(t *testing.T) {
		// As before signing: unsigned and foreign-signed snapshots restore.
		for _, ref := range []string{unsigned.Ref, byStranger.Ref, good.Ref} {
			if err := restoreErr(t, f.store, ref, nil); err != nil {
				t.Fatalf("%s: %v", ref, err)
			}
		}
		// The manifest still describes its database, chain head included.
		for _, ref := range []string{cvChanged, chainChanged, lyingRef} {
			if err := restoreErr(t, f.store, ref, nil); !errors.Is(err, snapshot.ErrCorrupt) {
				t.Fatalf("%s: %v, want ErrCorrupt", ref, err)
			}
		}
	})
}

// TestSigned_UnsignedFeedCompat: a node that verifies no events writes a
// manifest without a chain member, byte for byte as before signing, so
// programs predating it read it.
func TestSigned_UnsignedFeedCompat(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, newStore(t))
	f.publish(5)
	f.catchUp()
	m, err := snapshot.Create(ctx, f.node, f.store, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := artifact.GetBytes(ctx, f.store, m.Ref, snapshot.MaxManifestSize)
	if err != nil {
		t.Fatal(err)
	}
	if m.Chain != nil || bytes.Contains(b, []byte(`"chain"`)) || bytes.Contains(b, []byte("payload")) {
		t.Fatalf("unsigned manifest of an unverified feed:\n%s", b)
	}
}
