package snapshot_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/snapshot"
	"github.com/controlfeed/controlfeed/trust"
	"github.com/controlfeed/controlfeed/trust/trusttest"
)

// FuzzDecodeVerify feeds arbitrary stored manifests to Decode and, when
// one decodes, to Verify: neither panics, a decoded manifest passes Check,
// and Verify accepts only what the trusted key signed.
func FuzzDecodeVerify(f *testing.F) {
	key := trusttest.Key(f, 2)
	kr := trusttest.Keyring(f, key)
	m := snapshot.Manifest{Kind: snapshot.Kind, Format: snapshot.FormatVersion,
		Database: snapshot.Database{Ref: "sha256:" + hex64('a'), Size: 4096, SHA256: "sha256:" + hex64('a')},
		Schemas:  map[string]int{snapshot.ComponentApplier: 1}, ControlVersion: 9, AppliedEvents: 9,
		CreatedAt: time.Unix(1, 0).UTC(), Chain: &snapshot.ChainHead{Seq: 3, Digest: "sha256:" + hex64('b')}}
	plain, err := m.Encode()
	if err != nil {
		f.Fatal(err)
	}
	signed, _ := json.Marshal(trust.SignEnvelope(key, trust.ManifestPayloadType, plain))
	f.Add(plain)
	f.Add(signed)
	f.Add([]byte(`{"payloadType":"x","payload":"","signatures":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := snapshot.Decode(b, "sha256:"+hex64('c'))
		if err != nil {
			return
		}
		if err := got.Check(); err != nil {
			t.Fatalf("Decode accepted a manifest Check refuses: %v", err)
		}
		kid, err := got.Verify(kr)
		if err == nil && (kid != key.ID() || got.SignedBy == "") {
			t.Fatalf("Verify accepted key %q (SignedBy %q)", kid, got.SignedBy)
		}
	})
}

func hex64(c byte) string {
	b := make([]byte, 64)
	for i := range b {
		b[i] = c
	}
	return string(b)
}
