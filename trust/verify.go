package trust

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/controlfeed/controlfeed/controlevent"
)

// Keyring is the set of public keys a node trusts. The zero Keyring trusts
// nothing. A Keyring is not safe for concurrent mutation; Verify may be
// called concurrently once it is built.
type Keyring struct {
	keys map[string]ed25519.PublicKey
}

// NewKeyring returns a keyring trusting keys. Two entries with the same id
// are fine when they hold the same key (an id derives from its key, so they
// always do once parsed by this package).
func NewKeyring(keys ...PublicKey) (*Keyring, error) {
	kr := &Keyring{keys: make(map[string]ed25519.PublicKey, len(keys))}
	for _, k := range keys {
		if len(k.Key) != ed25519.PublicKeySize || KeyID(k.Key) != k.ID {
			return nil, fmt.Errorf("trust: keyring: key %.40q is not a %d-byte ed25519 key with that id", k.ID, ed25519.PublicKeySize)
		}
		kr.keys[k.ID] = k.Key
	}
	return kr, nil
}

// Len returns the number of trusted keys.
func (kr *Keyring) Len() int { return len(kr.keys) }

// IDs returns the trusted key ids, sorted.
func (kr *Keyring) IDs() []string {
	ids := make([]string, 0, len(kr.keys))
	for id := range kr.keys {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Verified is what Verify learned from a good signature.
type Verified struct {
	KeyID  string
	Link   Link
	Digest string // the event's chain digest
}

// Head returns the chain head after the verified event.
func (v Verified) Head() Head { return Head{Seq: v.Link.Seq, Digest: v.Digest} }

// Verify checks e's signature against the keyring: it must carry a
// well-formed signature member, by a trusted key, that verifies over e's
// canonical body. It does not check the chain (see Head.Check). Every
// failure is a *SecurityError.
func (kr *Keyring) Verify(e controlevent.Event) (Verified, error) {
	extra, raw, has, err := splitExtra(e)
	if err != nil {
		return Verified{}, securityErr(ReasonMalformed, e.EventID, "extra members: %v", err)
	}
	if !has {
		return Verified{}, securityErr(ReasonUnsigned, e.EventID, "no %s member", SignatureMember)
	}
	ws, sig, err := parseWireSig(raw)
	if err != nil {
		return Verified{}, securityErr(ReasonMalformed, e.EventID, "%v", err)
	}
	pub, ok := kr.keys[ws.KeyID]
	if !ok {
		return Verified{}, securityErr(ReasonUnknownKey, e.EventID, "key %s; trusted: %s", ws.KeyID, strings.Join(kr.IDs(), ", "))
	}
	l := Link{Seq: ws.Seq, Prev: ws.Prev}
	body := eventBody(e, extra, l)
	if !ed25519.Verify(pub, signedMessage(EventPayloadType, body, ws.KeyID), sig) {
		return Verified{}, securityErr(ReasonBadSignature, e.EventID, "key %s, seq %d: a field was altered after signing, or the signature was forged", ws.KeyID, ws.Seq)
	}
	return Verified{KeyID: ws.KeyID, Link: l, Digest: Digest(body)}, nil
}

func parseWireSig(raw string) (wireSig, []byte, error) {
	sig := new([ed25519.SignatureSize]byte)
	ws, err := parseWireSigInto(raw, sig)
	if err != nil {
		return ws, nil, err
	}
	return ws, sig[:], nil
}

// parseWireSigInto parses and checks a signature member, decoding its
// signature into sig.
func parseWireSigInto(raw string, sig *[ed25519.SignatureSize]byte) (wireSig, error) {
	ws, ok := scanWireSig(raw)
	if !ok {
		var err error
		if ws, err = decodeWireSig(raw); err != nil {
			return ws, err
		}
	}
	return ws, checkWireSig(ws, sig)
}

// checkWireSig checks a parsed signature member, decoding its signature
// into sig.
func checkWireSig(ws wireSig, sig *[ed25519.SignatureSize]byte) error {
	if ws.V != 1 {
		return fmt.Errorf("%s version %d; this build knows version 1 (upgrade the node?)", SignatureMember, ws.V)
	}
	if ws.Seq == 0 {
		return fmt.Errorf("%s seq is 0; chains start at 1", SignatureMember)
	}
	if (ws.Seq == 1) != (ws.Prev == "") {
		return fmt.Errorf("%s seq %d with prev %.80q: only seq 1 has an empty prev", SignatureMember, ws.Seq, ws.Prev)
	}
	if ws.Prev != "" && !validDigest(ws.Prev) {
		return fmt.Errorf("%s prev %.80q is not sha256:<64 hex digits>", SignatureMember, ws.Prev)
	}
	// base64 of 64 bytes is 88 characters, "==" at the end: decoded in
	// place, with no allocation.
	var buf [ed25519.SignatureSize + 2]byte
	if base64.StdEncoding.DecodedLen(len(ws.Sig)) > len(buf) {
		return fmt.Errorf("%s sig is not base64 of %d bytes", SignatureMember, ed25519.SignatureSize)
	}
	n, err := base64.StdEncoding.Decode(buf[:], []byte(ws.Sig))
	if err != nil || n != ed25519.SignatureSize {
		return fmt.Errorf("%s sig is not base64 of %d bytes", SignatureMember, ed25519.SignatureSize)
	}
	copy(sig[:], buf[:n])
	return nil
}

// decodeWireSig is the slow path of parseWireSigInto: encoding/json, for
// any form scanWireSig does not read (its own variable, so that the fast
// path's does not escape to the heap).
func decodeWireSig(raw string) (wireSig, error) {
	var ws wireSig
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ws); err != nil {
		return ws, fmt.Errorf("%s is not {v,kid,seq,prev,sig}: %v", SignatureMember, err)
	}
	return ws, nil
}

func validDigest(s string) bool {
	return controlevent.ParseChecksum(s) == nil // same form: sha256:<64 lowercase hex>
}

// Check returns nil when v is the event that follows h, and otherwise a
// *SecurityError saying how it does not: ReasonChainGap when v's seq is
// beyond h.Seq+1 (events were dropped, or are arriving out of order),
// ReasonChainReplay when v's seq is at or below h.Seq, ReasonChainFork when
// the seq is right but prev is not h's digest (an injected or altered
// predecessor, or a second producer chain).
//
// A node that finds a replay of an event it has already applied (its
// EventID is in applied_events) may treat it as the duplicate it is: the
// event changes nothing. Check does not know that; the caller does.
func (h Head) Check(eventID string, v Verified) error {
	switch want := h.Seq + 1; {
	case v.Link.Seq > want:
		return securityErr(ReasonChainGap, eventID, "seq %d arrived after seq %d: %d event(s) missing (dropped, or reordered)", v.Link.Seq, h.Seq, v.Link.Seq-want)
	case v.Link.Seq < want:
		return securityErr(ReasonChainReplay, eventID, "seq %d arrived when the chain is at seq %d (replayed or reordered)", v.Link.Seq, h.Seq)
	case v.Link.Prev != h.Digest:
		return securityErr(ReasonChainFork, eventID, "seq %d names predecessor %s but the chain head is %s (injected or altered event)", v.Link.Seq, short(v.Link.Prev), short(h.Digest))
	}
	return nil
}

func short(d string) string {
	if d == "" {
		return "(start)"
	}
	if len(d) > len(digestPrefix)+12 {
		return d[:len(digestPrefix)+12] + "…"
	}
	return d
}

// Result is VerifyAll's answer for one event: what Verify would return for
// it, except that a valid signature need not be its own (see VerifyAll).
type Result struct {
	Verified Verified
	Err      error
}

// VerifyAll checks events (in feed order, as one batch) as Verify checks each
// of them, with far fewer signature verifications: an event whose chain
// digest is the prev of the next event in the batch (with the next seq) is
// authenticated by that event once that one is, because the producer's key
// signed a body that names this event's body by its sha256. So a batch that
// is one unbroken chain costs one ed25519 verification (its last event), and
// each break in the chain one more. An event that is not vouched for by a
// later one is verified by its own signature, so every failure gets the
// same Reason Verify gives: unsigned, malformed, unknown key and bad
// signature are reported on the event that has them, not on the next one.
//
// An event vouched for by a later one is accepted even if its own
// signature member names a key this keyring does not trust or carries a
// wrong signature: its content is the one the trusted producer chained.
// VerifyAll does not check the chain against a head: see Head.Check. The
// result has one Result per event, in order.
func (kr *Keyring) VerifyAll(events []controlevent.Event) []Result {
	type parsed struct {
		ok     bool // parsed: its signature member is well formed
		extra  string
		l      Link
		kid    string
		sig    [ed25519.SignatureSize]byte
		digest string
	}
	res := make([]Result, len(events))
	ps := make([]parsed, len(events))
	var scratch []byte // each body, only hashed: the few that are verified are built again
	var err error
	for i, e := range events {
		p := &ps[i]
		var extra string
		ws, ok := onlySig(e.Extra) // the common case, in one scan
		if ok {
			err = checkWireSig(ws, &p.sig)
		} else {
			var raw string
			var has bool
			extra, raw, has, err = splitExtra(e)
			switch {
			case err != nil:
				res[i].Err = securityErr(ReasonMalformed, e.EventID, "extra members: %v", err)
				continue
			case !has:
				res[i].Err = securityErr(ReasonUnsigned, e.EventID, "no %s member", SignatureMember)
				continue
			}
			ws, err = parseWireSigInto(raw, &p.sig)
		}
		if err != nil {
			res[i].Err = securityErr(ReasonMalformed, e.EventID, "%v", err)
			continue
		}
		p.ok, p.extra, p.l, p.kid = true, extra, Link{Seq: ws.Seq, Prev: ws.Prev}, ws.KeyID
		scratch = appendEventBody(scratch[:0], e, extra, p.l)
		p.digest = Digest(scratch)
	}
	vouched := false // events[i+1] is authenticated and links to events[i]
	for i := len(events) - 1; i >= 0; i-- {
		p := &ps[i]
		if !p.ok {
			vouched = false
			continue
		}
		ok := vouched
		if !ok {
			pub, known := kr.keys[p.kid]
			switch {
			case !known:
				res[i].Err = securityErr(ReasonUnknownKey, events[i].EventID, "key %s; trusted: %s", p.kid, strings.Join(kr.IDs(), ", "))
			case !ed25519.Verify(pub, signedMessage(EventPayloadType, eventBody(events[i], p.extra, p.l), p.kid), p.sig[:]):
				res[i].Err = securityErr(ReasonBadSignature, events[i].EventID, "key %s, seq %d: a field was altered after signing, or the signature was forged", p.kid, p.l.Seq)
			default:
				ok = true
			}
		}
		if ok {
			res[i].Verified = Verified{KeyID: p.kid, Link: p.l, Digest: p.digest}
		}
		vouched = ok && i > 0 && ps[i-1].ok && p.l.Seq == ps[i-1].l.Seq+1 && p.l.Prev == ps[i-1].digest
	}
	return res
}

// onlySigPrefix starts an Extra whose only member is the signature.
const onlySigPrefix = `{"` + SignatureMember + `":`

// onlySig is splitExtra and scanWireSig in one scan, for the Extra every
// signed event without extra members of its own has: exactly
// {"controlfeed_sig":<the member as Sign writes it>}, with no character in
// its values that encoding/json escapes for HTML. That text is canonical,
// so splitExtra would return "" and that member: ok is false for any other
// text, which then takes splitExtra's way.
func onlySig(x string) (ws wireSig, ok bool) {
	v, ok := strings.CutPrefix(x, onlySigPrefix)
	if !ok || !strings.HasSuffix(v, "}") {
		return ws, false
	}
	if ws, ok = scanWireSig(v[:len(v)-1]); !ok || htmlEscaped(ws.KeyID) || htmlEscaped(ws.Prev) || htmlEscaped(ws.Sig) {
		return wireSig{}, false
	}
	return ws, true
}

// htmlEscaped reports whether s has a character encoding/json writes
// escaped for HTML (scanField has already refused the others it escapes).
func htmlEscaped(s string) bool {
	return strings.ContainsAny(s, "<>&")
}

// scanWireSig parses the signature member in the exact form Sign writes it
// (json.Marshal of wireSig: members in declaration order, no escapes in
// the values), without encoding/json. ok is false for any other text, which
// parseWireSig then reads with encoding/json.
func scanWireSig(s string) (ws wireSig, ok bool) {
	rest, ok := strings.CutPrefix(s, `{"v":`)
	if !ok {
		return ws, false
	}
	var n uint64
	if n, rest, ok = scanUint(rest); !ok || n > 1<<31 {
		return ws, false
	}
	ws.V = int(n)
	if ws.KeyID, rest, ok = scanField(rest, `,"kid":"`); !ok {
		return ws, false
	}
	if rest, ok = strings.CutPrefix(rest, `,"seq":`); !ok {
		return ws, false
	}
	if ws.Seq, rest, ok = scanUint(rest); !ok {
		return ws, false
	}
	if ws.Prev, rest, ok = scanField(rest, `,"prev":"`); !ok {
		return ws, false
	}
	if ws.Sig, rest, ok = scanField(rest, `,"sig":"`); !ok {
		return ws, false
	}
	return ws, rest == "}"
}

// scanUint reads a JSON number without sign, fraction or leading zeros.
func scanUint(s string) (uint64, string, bool) {
	i := 0
	var v uint64
	for i < len(s) && '0' <= s[i] && s[i] <= '9' {
		d := uint64(s[i] - '0')
		if v > (1<<64-1-d)/10 { // v*10+d would wrap
			return 0, s, false
		}
		v = v*10 + d
		i++
	}
	if i == 0 || i > 1 && s[0] == '0' {
		return 0, s, false
	}
	return v, s[i:], true
}

// scanField reads prefix and a string value up to its closing quote; a
// value with an escape or a control character is left to encoding/json.
func scanField(s, prefix string) (string, string, bool) {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return "", s, false
	}
	for i := 0; i < len(rest); i++ {
		switch c := rest[i]; {
		case c == '"':
			return rest[:i], rest[i+1:], true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return "", s, false
		}
	}
	return "", s, false
}
