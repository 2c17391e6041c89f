package trust_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/trust"
	"github.com/controlfeed/controlfeed/trust/trusttest"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json")

func sampleEvent(id string) controlevent.Event {
	return controlevent.Event{
		EventID:     id,
		Type:        "kv.put",
		Key:         "tenants/acme",
		Version:     7,
		BaseVersion: 6,
		ArtifactRef: "sha256-" + strings.Repeat("ab", 32),
		Checksum:    controlevent.Checksum([]byte("payload " + id)),
		CreatedAt:   time.Date(2026, 12, 2, 5, 0, 0, 123456789, time.UTC),
		Extra:       `{"tenant_id":"acme"}`,
	}
}

// roundTrip sends e through the wire codec, as every backend does.
func roundTrip(t testing.TB, e controlevent.Event) controlevent.Event {
	t.Helper()
	e.ControlVersion = 1
	b, err := controlevent.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	got, err := controlevent.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestSignVerify_OK(t *testing.T) {
	k := trusttest.Key(t, 1)
	kr := trusttest.Keyring(t, k)
	var head trust.Head
	var node trust.Head
	for i, id := range []string{"e1", "e2", "e3"} {
		s, next, err := trust.Sign(k, sampleEvent(id), head)
		if err != nil {
			t.Fatal(err)
		}
		if next.Seq != uint64(i+1) {
			t.Fatalf("head after %s = %d, want %d", id, next.Seq, i+1)
		}
		head = next
		got := roundTrip(t, s)
		v, err := kr.Verify(got)
		if err != nil {
			t.Fatalf("Verify(%s): %v", id, err)
		}
		if err := node.Check(got.EventID, v); err != nil {
			t.Fatalf("Check(%s): %v", id, err)
		}
		if v.Head() != next {
			t.Fatalf("verified head %+v, producer head %+v", v.Head(), next)
		}
		node = v.Head()
		if x, ok := got.ExtraField("tenant_id"); !ok || string(x) != `"acme"` {
			t.Fatalf("producer's extra member lost: %q %v", x, ok)
		}
	}
}

func TestSign_Deterministic(t *testing.T) {
	k := trusttest.Key(t, 1)
	a, ha, _ := trust.Sign(k, sampleEvent("e1"), trust.Head{})
	b, hb, _ := trust.Sign(k, a, trust.Head{}) // re-signing replaces the member
	if a.Extra != b.Extra || ha != hb {
		t.Fatalf("re-signing changed the event:\n%s\n%s", a.Extra, b.Extra)
	}
	// Another key gives another signature but the same chain digest, so a
	// standby producer with its own key continues the same chain.
	c, hc, _ := trust.Sign(trusttest.Key(t, 2), sampleEvent("e1"), trust.Head{})
	if c.Extra == a.Extra || hc != ha {
		t.Fatalf("other key: extra equal=%v, head %+v vs %+v", c.Extra == a.Extra, hc, ha)
	}
}

func TestVerify_Failures(t *testing.T) {
	k := trusttest.Key(t, 1)
	kr := trusttest.Keyring(t, k)
	signed, _, err := trust.Sign(k, sampleEvent("e1"), trust.Head{})
	if err != nil {
		t.Fatal(err)
	}
	setSig := func(f func(m map[string]any)) controlevent.Event {
		raw, _ := signed.ExtraField(trust.SignatureMember)
		var m map[string]any
		json.Unmarshal(raw, &m)
		f(m)
		e := signed
		e.Extra, err = controlevent.EncodeExtra(map[string]any{"tenant_id": "acme", trust.SignatureMember: m})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	alter := map[string]func(e *controlevent.Event){
		"EventID":     func(e *controlevent.Event) { e.EventID = "e2" },
		"Type":        func(e *controlevent.Event) { e.Type = "kv.delete" },
		"Key":         func(e *controlevent.Event) { e.Key = "tenants/evil" },
		"Version":     func(e *controlevent.Event) { e.Version++ },
		"BaseVersion": func(e *controlevent.Event) { e.BaseVersion-- },
		"ArtifactRef": func(e *controlevent.Event) { e.ArtifactRef = "sha256-" + strings.Repeat("cd", 32) },
		"Checksum":    func(e *controlevent.Event) { e.Checksum = controlevent.Checksum([]byte("evil")) },
		"CreatedAt":   func(e *controlevent.Event) { e.CreatedAt = e.CreatedAt.Add(time.Nanosecond) },
		"Extra": func(e *controlevent.Event) {
			raw, _ := e.ExtraField(trust.SignatureMember)
			e.Extra, _ = controlevent.EncodeExtra(map[string]any{"tenant_id": "evil", trust.SignatureMember: raw})
		},
		"ExtraAdded": func(e *controlevent.Event) {
			raw, _ := e.ExtraField(trust.SignatureMember)
			e.Extra, _ = controlevent.EncodeExtra(map[string]any{"tenant_id": "acme", "x": 1, trust.SignatureMember: raw})
		},
	}
	for name, f := range alter {
		t.Run("Altered"+name, func(t *testing.T) {
			e := signed
			f(&e)
			_, err := kr.Verify(roundTrip(t, e))
			if !errors.Is(err, trust.ErrBadSignature) || !errors.Is(err, trust.ErrSecurity) {
				t.Fatalf("Verify = %v, want ErrBadSignature", err)
			}
		})
	}
	// ControlVersion is stamped by the broker and not covered.
	e := signed
	e.ControlVersion = 99
	if _, err := kr.Verify(e); err != nil {
		t.Fatalf("re-stamped ControlVersion: %v", err)
	}
	cases := map[string]struct {
		e    controlevent.Event
		kr   *trust.Keyring
		want error
	}{
		"Unsigned":     {sampleEvent("e1"), kr, trust.ErrUnsigned},
		"UnknownKey":   {signed, trusttest.Keyring(t, trusttest.Key(t, 2)), trust.ErrUnknownKey},
		"EmptyKeyring": {signed, trusttest.Keyring(t), trust.ErrUnknownKey},
		"SeqAltered":   {setSig(func(m map[string]any) { m["seq"] = 1; m["prev"] = "" }), kr, nil},
		"SeqZero":      {setSig(func(m map[string]any) { m["seq"] = 0 }), kr, trust.ErrMalformed},
		"PrevOnFirst":  {setSig(func(m map[string]any) { m["prev"] = "sha256:" + strings.Repeat("0", 64) }), kr, trust.ErrMalformed},
		"SeqTwoNoPrev": {setSig(func(m map[string]any) { m["seq"] = 2 }), kr, trust.ErrMalformed},
		"Version2":     {setSig(func(m map[string]any) { m["v"] = 2 }), kr, trust.ErrMalformed},
		"SigNotBase64": {setSig(func(m map[string]any) { m["sig"] = "!!" }), kr, trust.ErrMalformed},
		"SigShort":     {setSig(func(m map[string]any) { m["sig"] = "AAAA" }), kr, trust.ErrMalformed},
		"UnknownField": {setSig(func(m map[string]any) { m["extra"] = 1 }), kr, trust.ErrMalformed},
		"KidSwapped":   {setSig(func(m map[string]any) { m["kid"] = trusttest.Key(t, 2).ID() }), trusttest.Keyring(t, k, trusttest.Key(t, 2)), trust.ErrBadSignature},
		"SigZeroed":    {setSig(func(m map[string]any) { m["sig"] = strings.Repeat("A", 86) + "==" }), kr, trust.ErrBadSignature},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := c.kr.Verify(c.e)
			if c.want == nil {
				if err != nil {
					t.Fatalf("Verify = %v, want nil (the unchanged fields still verify)", err)
				}
				return
			}
			if !errors.Is(err, c.want) || !errors.Is(err, trust.ErrSecurity) {
				t.Fatalf("Verify = %v, want %v", err, c.want)
			}
			var se *trust.SecurityError
			if !errors.As(err, &se) || se.EventID != c.e.EventID {
				t.Fatalf("error %v does not name event %q", err, c.e.EventID)
			}
		})
	}
}

func TestHead_Check(t *testing.T) {
	k := trusttest.Key(t, 1)
	kr := trusttest.Keyring(t, k)
	var heads []trust.Head
	var events []trust.Verified
	h := trust.Head{}
	for _, id := range []string{"e1", "e2", "e3", "e4"} {
		s, next, _ := trust.Sign(k, sampleEvent(id), h)
		v, err := kr.Verify(s)
		if err != nil {
			t.Fatal(err)
		}
		heads = append(heads, h)
		events = append(events, v)
		h = next
	}
	// A forged second chain: e2' signed after a different e1.
	other, _, _ := trust.Sign(k, sampleEvent("x1"), trust.Head{})
	ov, _ := kr.Verify(other)
	forged, _, _ := trust.Sign(k, sampleEvent("e2"), ov.Head())
	fv, _ := kr.Verify(forged)

	cases := map[string]struct {
		head trust.Head
		v    trust.Verified
		want error
	}{
		"Next":       {heads[2], events[2], nil},
		"First":      {trust.Head{}, events[0], nil},
		"Dropped":    {events[0].Head(), events[2], trust.ErrChainGap},
		"SwappedA":   {events[1].Head(), events[3], trust.ErrChainGap},
		"Replayed":   {events[2].Head(), events[1], trust.ErrChainReplay},
		"ReplaySelf": {events[2].Head(), events[2], trust.ErrChainReplay},
		"Injected":   {events[0].Head(), fv, trust.ErrChainFork},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			err := c.head.Check("e", c.v)
			if c.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, c.want) || !errors.Is(err, trust.ErrSecurity) {
				t.Fatalf("Check = %v, want %v", err, c.want)
			}
		})
	}
}

func TestKeys_RoundTrip(t *testing.T) {
	k, err := trust.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	priv := trust.MarshalPrivateKey(k)
	k2, err := trust.ParsePrivateKey(priv)
	if err != nil || k2.ID() != k.ID() {
		t.Fatalf("ParsePrivateKey = %v, %v", k2, err)
	}
	pub, err := trust.ParsePublicKey(trust.MarshalPublicKey(k.Public()))
	if err != nil || pub.ID != k.ID() || !bytes.Equal(pub.Key, k.Public().Key) {
		t.Fatalf("ParsePublicKey = %+v, %v", pub, err)
	}
	line := strings.Split(string(trust.MarshalPublicKey(k.Public())), "\n")[2]
	spec := k.ID() + "=" + strings.TrimPrefix(line, "key: ")
	if p, err := trust.ParseTrustSpec(spec); err != nil || p.ID != k.ID() {
		t.Fatalf("ParseTrustSpec(%q) = %+v, %v", spec, p, err)
	}
	if s := k.String() + " " + fmt.Sprintf("%v %+v %#v", k, k, k); strings.Contains(s, strings.Split(string(priv), "seed: ")[1][:20]) {
		t.Fatalf("a printed key shows its seed: %s", s)
	}
}

func TestKeys_ParseErrors(t *testing.T) {
	k := trusttest.Key(t, 1)
	other := trusttest.Key(t, 2)
	priv := string(trust.MarshalPrivateKey(k))
	seed := strings.TrimSuffix(strings.Split(priv, "seed: ")[1], "\n")
	pubLine := strings.TrimSuffix(strings.Split(string(trust.MarshalPublicKey(k.Public())), "key: ")[1], "\n")
	bad := map[string]func() error{
		"PrivEmpty": func() error { _, err := trust.ParsePrivateKey(nil); return err },
		"PrivKidEdited": func() error {
			_, err := trust.ParsePrivateKey([]byte(strings.Replace(priv, k.ID(), other.ID(), 1)))
			return err
		},
		"PrivSeedShort": func() error {
			_, err := trust.ParsePrivateKey([]byte(strings.Replace(priv, seed, seed[:20], 1)))
			return err
		},
		"PubIsPrivate":   func() error { _, err := trust.ParsePublicKey([]byte(priv)); return err },
		"SpecNoEquals":   func() error { _, err := trust.ParseTrustSpec(pubLine); return err },
		"SpecWrongID":    func() error { _, err := trust.ParseTrustSpec(other.ID() + "=" + pubLine); return err },
		"SpecBadBase64":  func() error { _, err := trust.ParseTrustSpec(k.ID() + "=%%%"); return err },
		"KeyringBadSize": func() error { _, err := trust.NewKeyring(trust.PublicKey{ID: k.ID(), Key: []byte{1}}); return err },
	}
	for name, f := range bad {
		t.Run(name, func(t *testing.T) {
			err := f()
			if err == nil {
				t.Fatal("accepted")
			}
			if strings.Contains(err.Error(), seed[:16]) {
				t.Fatalf("error shows the seed: %v", err)
			}
		})
	}
}

func TestEnvelope(t *testing.T) {
	k := trusttest.Key(t, 1)
	kr := trusttest.Keyring(t, k)
	env := trust.SignEnvelope(k, trust.ManifestPayloadType, []byte(`{"cursor":42}`))
	b, _ := json.Marshal(env)
	env2, err := trust.ParseEnvelope(b)
	if err != nil {
		t.Fatal(err)
	}
	p, kid, err := kr.VerifyEnvelope(env2, trust.ManifestPayloadType)
	if err != nil || string(p) != `{"cursor":42}` || kid != k.ID() {
		t.Fatalf("VerifyEnvelope = %q %q %v", p, kid, err)
	}
	alt := env2
	alt.Payload = []byte(`{"cursor":43}`)
	if _, _, err := kr.VerifyEnvelope(alt, trust.ManifestPayloadType); !errors.Is(err, trust.ErrBadSignature) {
		t.Fatalf("altered payload: %v", err)
	}
	if _, _, err := kr.VerifyEnvelope(env2, trust.EventPayloadType); !errors.Is(err, trust.ErrMalformed) {
		t.Fatalf("wrong type: %v", err)
	}
	if _, _, err := trusttest.Keyring(t, trusttest.Key(t, 2)).VerifyEnvelope(env2, trust.ManifestPayloadType); !errors.Is(err, trust.ErrUnknownKey) {
		t.Fatalf("unknown key: %v", err)
	}
	none := env2
	none.Signatures = nil
	if _, _, err := kr.VerifyEnvelope(none, trust.ManifestPayloadType); !errors.Is(err, trust.ErrUnsigned) {
		t.Fatalf("unsigned: %v", err)
	}
}

// vector is one golden vector: a fixed key and events, the canonical body
// and the wire bytes. Another implementation of the encoding checks itself
// against testdata/vectors.json.
type vector struct {
	Name      string `json:"name"`
	Seed      string `json:"seed_hex"`
	KeyID     string `json:"kid"`
	PrevSeq   uint64 `json:"prev_seq"`
	PrevHead  string `json:"prev_digest"`
	Body      string `json:"body"`
	Digest    string `json:"digest"`
	Signed    string `json:"signed_message"`
	WireEvent string `json:"wire_event"`
}

func TestGoldenVectors(t *testing.T) {
	k := trusttest.Key(t, 7)
	var got []vector
	h := trust.Head{}
	events := []controlevent.Event{sampleEvent("0190c0de-0000-7000-8000-000000000001"), {EventID: "e-minimal", Type: "t", CreatedAt: time.Unix(0, 0).UTC()}}
	events[1].Key = "ключ\n=1:" // non-ASCII and the encoding's own separators
	for i, e := range events {
		s, next, err := trust.Sign(k, e, h)
		if err != nil {
			t.Fatal(err)
		}
		body, err := trust.EventBody(s, h.Next())
		if err != nil {
			t.Fatal(err)
		}
		s.ControlVersion = uint64(i + 1)
		wire, _ := controlevent.Marshal(s)
		got = append(got, vector{
			Name: e.EventID, Seed: strings.Repeat("07", 32), KeyID: k.ID(),
			PrevSeq: h.Seq, PrevHead: h.Digest, Body: string(body), Digest: next.Digest,
			Signed:    string(trust.PAE(trust.EventPayloadType, append(body, []byte("producer="+itoa(len(k.ID()))+":"+k.ID()+"\n")...))),
			WireEvent: string(wire),
		})
		h = next
	}
	path := filepath.Join("testdata", "vectors.json")
	b, _ := json.MarshalIndent(got, "", "  ")
	b = append(b, '\n')
	if *update {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./trust -run TestGoldenVectors -update)", err)
	}
	if !bytes.Equal(b, want) {
		t.Fatalf("the canonical encoding changed; if on purpose, bump EventPayloadType and run with -update\ngot:\n%s", b)
	}
	// The wire events verify.
	for _, v := range got {
		e, err := controlevent.Decode([]byte(v.WireEvent))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := trusttest.Keyring(t, k).Verify(e); err != nil {
			t.Fatalf("vector %s: %v", v.Name, err)
		}
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func BenchmarkSign(b *testing.B) {
	k := trusttest.Key(b, 1)
	e := sampleEvent("e1")
	for b.Loop() {
		if _, _, err := trust.Sign(k, e, trust.Head{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	k := trusttest.Key(b, 1)
	kr := trusttest.Keyring(b, k)
	s, _, _ := trust.Sign(k, sampleEvent("e1"), trust.Head{})
	for b.Loop() {
		if _, err := kr.Verify(s); err != nil {
			b.Fatal(err)
		}
	}
}

// TestVerifyAll agrees with Verify on every event of a batch in which one
// event at a time is broken in each way, and accepts an unbroken chain.
func TestVerifyAll(t *testing.T) {
	k, other := trusttest.Key(t, 1), trusttest.Key(t, 2)
	kr := trusttest.Keyring(t, k)
	var good []controlevent.Event
	h := trust.Head{}
	for i := range 6 {
		s, next, _ := trust.Sign(k, sampleEvent(fmt.Sprintf("e%d", i)), h)
		good, h = append(good, s), next
	}
	for i, r := range kr.VerifyAll(good) {
		if r.Err != nil {
			t.Fatalf("event %d of a good chain: %v", i, r.Err)
		}
		want, _ := kr.Verify(good[i])
		if r.Verified != want {
			t.Fatalf("event %d: %+v, Verify says %+v", i, r.Verified, want)
		}
	}
	breaks := map[string]struct {
		f    func(e controlevent.Event) controlevent.Event
		want error
	}{
		"Unsigned": {func(e controlevent.Event) controlevent.Event { u, _ := trust.Unsigned(e); return u }, trust.ErrUnsigned},
		"Altered":  {func(e controlevent.Event) controlevent.Event { e.Key = "evil"; return e }, trust.ErrBadSignature},
		"OtherKey": {func(e controlevent.Event) controlevent.Event {
			u, _ := trust.Unsigned(e)
			s, _, _ := trust.Sign(other, u, trust.Head{})
			return s
		}, trust.ErrUnknownKey},
		"Malformed": {func(e controlevent.Event) controlevent.Event { e.Extra = `{"controlfeed_sig":1}`; return e }, trust.ErrMalformed},
	}
	for name, b := range breaks {
		for at := range good {
			t.Run(fmt.Sprintf("%s/%d", name, at), func(t *testing.T) {
				batch := append([]controlevent.Event(nil), good...)
				batch[at] = b.f(batch[at])
				for i, r := range kr.VerifyAll(batch) {
					_, single := kr.Verify(batch[i])
					if i == at && name == "OtherKey" && at == 0 {
						// Re-signed by another key at its own place: the
						// same body, which event 1 vouches for.
						if r.Err != nil {
							t.Fatalf("vouched event: %v", r.Err)
						}
						continue
					}
					if i == at {
						if !errors.Is(r.Err, b.want) || !errors.Is(single, b.want) {
							t.Fatalf("broken event %d: VerifyAll %v, Verify %v; want %v", i, r.Err, single, b.want)
						}
						continue
					}
					if r.Err != nil || single != nil {
						t.Fatalf("intact event %d: VerifyAll %v, Verify %v", i, r.Err, single)
					}
				}
			})
		}
	}
	// Swapped events: each still verifies by itself (the chain check
	// against the head finds the order).
	swapped := append([]controlevent.Event(nil), good...)
	swapped[2], swapped[3] = swapped[3], swapped[2]
	for i, r := range kr.VerifyAll(swapped) {
		if r.Err != nil {
			t.Fatalf("swapped batch, event %d: %v", i, r.Err)
		}
	}
}

func BenchmarkVerifyAll100(b *testing.B) {
	k := trusttest.Key(b, 1)
	kr := trusttest.Keyring(b, k)
	var batch []controlevent.Event
	h := trust.Head{}
	for i := range 100 {
		s, next, _ := trust.Sign(k, sampleEvent(fmt.Sprintf("e%d", i)), h)
		batch, h = append(batch, s), next
	}
	for b.Loop() {
		kr.VerifyAll(batch)
	}
}

// TestSignBatch gives what Sign gives one event at a time, and stops at an
// event that cannot be signed.
func TestSignBatch(t *testing.T) {
	k := trusttest.Key(t, 1)
	var in []controlevent.Event
	for i := range 37 {
		in = append(in, sampleEvent(fmt.Sprintf("e%d", i)))
	}
	start := trust.Head{Seq: 9, Digest: trust.Digest([]byte("start"))}
	got, heads, err := trust.SignBatch(k, in, start)
	if err != nil || len(got) != len(in) || len(heads) != len(in) {
		t.Fatalf("SignBatch = %d, %d, %v", len(got), len(heads), err)
	}
	h := start
	for i, e := range in {
		want, next, _ := trust.Sign(k, e, h)
		if got[i].Extra != want.Extra || heads[i] != next {
			t.Fatalf("event %d differs from Sign", i)
		}
		h = next
	}
	bad := append([]controlevent.Event(nil), in[:5]...)
	bad[3].Extra = `{"x":` // malformed
	got, heads, err = trust.SignBatch(k, bad, start)
	if err == nil || len(got) != 3 || len(heads) != 3 {
		t.Fatalf("SignBatch with a bad event 3 = %d, %d, %v", len(got), len(heads), err)
	}
}
