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
		rest, val, ok := cutMember(c, SignatureMember)
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
		if has != (val != nil) || has && string(want) != string(val) {
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
