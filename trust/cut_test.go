package trust

import (
	"encoding/json"
	"testing"

	"github.com/controlfeed/controlfeed/controlevent"
)

// FuzzCutMember compares the scan that strips the signature member with
// encoding/json on canonical Extra texts.
func FuzzCutMember(f *testing.F) {
	for _, s := range []string{``, `{"a":1}`, `{"controlfeed_sig":{"v":1}}`, `{"a":"x\\\",\"controlfeed_sig\":1","controlfeed_sig":[1,{"b":"}"}],"z":{"controlfeed_sig":2}}`,
		`{"a":{"controlfeed_sig":1},"b":2}`, `{"controlfeed_sig":"x","zz":[]}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, x string) {
		c, err := controlevent.CanonicalExtra(x)
		if err != nil {
			return
		}
		rest, val, present, ok := cutMember(c, SignatureMember)
		if !ok {
			t.Fatalf("scan refused canonical %q", c)
		}
		var m map[string]json.RawMessage
		if c != "" {
			if err := json.Unmarshal([]byte(c), &m); err != nil {
				t.Fatal(err)
			}
		}
		want, has := m[SignatureMember]
		if has != present || has && string(want) != val {
			t.Fatalf("%q: value %q, want %q (present %v)", c, val, want, has)
		}
		delete(m, SignatureMember)
		var wantRest string
		if len(m) > 0 {
			b, _ := json.Marshal(m)
			wantRest, _ = controlevent.CanonicalExtra(string(b))
		}
		if rest != wantRest {
			t.Fatalf("%q: rest %q, want %q", c, rest, wantRest)
		}
	})
}

// FuzzScanWireSig compares the fast parser of the signature member with
// encoding/json: whatever it accepts, encoding/json reads the same.
func FuzzScanWireSig(f *testing.F) {
	f.Add(`{"v":1,"kid":"ed25519:0011223344556677","seq":42,"prev":"sha256:00","sig":"AAAA"}`)
	f.Add(`{"v":1,"kid":"","seq":0,"prev":"","sig":""}`)
	f.Fuzz(func(t *testing.T, s string) {
		ws, ok := scanWireSig(s)
		if !ok {
			return
		}
		var want wireSig
		if err := json.Unmarshal([]byte(s), &want); err != nil {
			t.Fatalf("scan accepted %q that encoding/json refuses: %v", s, err)
		}
		if ws != want {
			t.Fatalf("%q: scan %+v, encoding/json %+v", s, ws, want)
		}
	})
}

// FuzzOnlySig compares VerifyAll's one-scan reading of a signature-only
// Extra with the general way (splitExtra, then the member's parse): when
// onlySig accepts a text, splitExtra must find the same member and nothing
// else in it.
func FuzzOnlySig(f *testing.F) {
	k, err := NewPrivateKey(make([]byte, 32))
	if err != nil {
		f.Fatal(err)
	}
	e := controlevent.Event{EventID: "e1", Type: "kv.put", Key: "k", Version: 1, ControlVersion: 1}
	s, _, err := Sign(k, e, Head{})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(s.Extra)
	for _, x := range []string{
		`{"controlfeed_sig":{"v":1,"kid":"a<b","seq":1,"prev":"","sig":"x"}}`,
		`{"controlfeed_sig":{"v":1,"kid":"a","seq":2,"prev":"p&q","sig":"x"}}`,
		`{"controlfeed_sig":{"v":1,"kid":"a","seq":1,"prev":"","sig":"x"},"z":1}`,
		`{"controlfeed_sig": {"v":1,"kid":"a","seq":1,"prev":"","sig":"x"}}`,
		`{"controlfeed_sig":{"v":1,"kid":"a\u00e9","seq":1,"prev":"","sig":"x"}}`,
		`{"controlfeed_sig":{"v":1,"kid":"a` + "\x7f" + `","seq":1,"prev":"","sig":"x"}}`,
	} {
		f.Add(x)
	}
	f.Fuzz(func(t *testing.T, x string) {
		ws, ok := onlySig(x)
		if !ok {
			return
		}
		rest, raw, has, err := splitExtra(controlevent.Event{EventID: "e", Extra: x})
		if err != nil || !has || rest != "" {
			t.Fatalf("onlySig accepted %q; splitExtra: rest %q, has %v, err %v", x, rest, has, err)
		}
		if got, ok := scanWireSig(raw); !ok || got != ws {
			t.Fatalf("onlySig read %+v from %q; splitExtra's member %q reads %+v (%v)", ws, x, raw, got, ok)
		}
	})
}

// TestOnlySig_SignedEvent: what Sign writes for an event without extra
// members of its own is read in one scan, and an HTML character in a value
// is left to the general way.
func TestOnlySig_SignedEvent(t *testing.T) {
	k, err := NewPrivateKey(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	var head Head
	for i := 1; i <= 3; i++ {
		var s controlevent.Event
		s, head, err = Sign(k, controlevent.Event{EventID: "e", Type: "kv.put", Version: int64(i)}, head)
		if err != nil {
			t.Fatal(err)
		}
		ws, ok := onlySig(s.Extra)
		if !ok || ws.Seq != uint64(i) || ws.KeyID != k.ID() {
			t.Fatalf("event %d: onlySig(%q) = %+v, %v", i, s.Extra, ws, ok)
		}
	}
	if _, ok := onlySig(`{"controlfeed_sig":{"v":1,"kid":"a<b","seq":1,"prev":"","sig":"x"}}`); ok {
		t.Fatal("onlySig accepted a value json.Marshal would write with \\u003c")
	}
}

// TestScanWireSig_Overflow: a number just above the largest uint64 is not
// read as a small one (it wrapped to 1: a seq-1 event's member rewritten
// with seq 18446744073709551617 still verified), and encoding/json's
// refusal is kept.
func TestScanWireSig_Overflow(t *testing.T) {
	for _, s := range []string{
		`{"v":1,"kid":"k","seq":18446744073709551617,"prev":"","sig":"x"}`,
		`{"v":18446744073709551617,"kid":"k","seq":1,"prev":"","sig":"x"}`,
		`{"v":1,"kid":"k","seq":18446744073709551616,"prev":"","sig":"x"}`,
	} {
		if ws, ok := scanWireSig(s); ok {
			t.Errorf("scanWireSig(%s) = seq %d, v %d; want it refused", s, ws.Seq, ws.V)
		}
		if _, err := decodeWireSig(s); err == nil {
			t.Errorf("decodeWireSig(%s) accepted it", s)
		}
	}
	ws, ok := scanWireSig(`{"v":1,"kid":"k","seq":18446744073709551615,"prev":"","sig":"x"}`)
	if !ok || ws.Seq != 1<<64-1 {
		t.Fatalf("the largest seq: %+v, %v", ws, ok)
	}
}
