package trust_test

import (
	"errors"
	"testing"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/trust"
	"github.com/controlfeed/controlfeed/trust/trusttest"
)

// FuzzVerify feeds arbitrary wire events to Verify: it must never panic,
// every failure must be a SecurityError, and a success must be an event
// signed by the trusted key whose body re-signs to the same bytes.
func FuzzVerify(f *testing.F) {
	k := trusttest.Key(f, 1)
	kr := trusttest.Keyring(f, k)
	s, _, _ := trust.Sign(k, sampleEvent("e1"), trust.Head{})
	s.ControlVersion = 1
	b, _ := controlevent.Marshal(s)
	f.Add(b)
	s2, _, _ := trust.Sign(k, sampleEvent("e2"), trust.Head{Seq: 1, Digest: "sha256:0000000000000000000000000000000000000000000000000000000000000000"})
	s2.ControlVersion = 2
	b2, _ := controlevent.Marshal(s2)
	f.Add(b2)
	f.Add([]byte(`{"event_id":"a","type":"t","control_version":1,"created_at":"2026-01-01T00:00:00Z","controlfeed_sig":{"v":1}}`))
	f.Fuzz(func(t *testing.T, wire []byte) {
		e, err := controlevent.Decode(wire)
		if err != nil {
			return
		}
		v, err := kr.Verify(e)
		// VerifyAll of the event alone has its own parsing and body
		// building (no allocation per event): it must say what Verify says.
		all := kr.VerifyAll([]controlevent.Event{e})
		if all[0].Verified != v || (all[0].Err == nil) != (err == nil) || err != nil && all[0].Err.Error() != err.Error() {
			t.Fatalf("VerifyAll = %+v, %v; Verify = %+v, %v", all[0].Verified, all[0].Err, v, err)
		}
		if err != nil {
			if !errors.Is(err, trust.ErrSecurity) {
				t.Fatalf("Verify error is not a SecurityError: %v", err)
			}
			return
		}
		u, err := trust.Unsigned(e)
		if err != nil {
			t.Fatal(err)
		}
		again, next, err := trust.Sign(k, u, trust.Head{Seq: v.Link.Seq - 1, Digest: v.Link.Prev})
		if err != nil {
			t.Fatal(err)
		}
		if next != v.Head() {
			t.Fatalf("verified head %+v, re-signed head %+v", v.Head(), next)
		}
		if _, err := kr.Verify(again); err != nil {
			t.Fatalf("re-signed event does not verify: %v", err)
		}
	})
}

// FuzzParseKeys checks that the key parsers never panic and never accept a
// key whose id does not derive from it.
func FuzzParseKeys(f *testing.F) {
	k := trusttest.Key(f, 3)
	f.Add(trust.MarshalPrivateKey(k))
	f.Add(trust.MarshalPublicKey(k.Public()))
	f.Add([]byte(k.ID() + "=AAAA"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if p, err := trust.ParsePrivateKey(b); err == nil && trust.KeyID(p.Public().Key) != p.ID() {
			t.Fatal("private key id mismatch accepted")
		}
		if p, err := trust.ParsePublicKey(b); err == nil && trust.KeyID(p.Key) != p.ID {
			t.Fatal("public key id mismatch accepted")
		}
		if p, err := trust.ParseTrustSpec(string(b)); err == nil && trust.KeyID(p.Key) != p.ID {
			t.Fatal("trust spec id mismatch accepted")
		}
		_, _ = trust.ParseEnvelope(b)
	})
}
