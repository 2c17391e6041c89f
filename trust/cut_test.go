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
