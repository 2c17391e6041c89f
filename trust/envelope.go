package trust

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"strings"
)

// ManifestPayloadType is the DSSE payload type of a signed snapshot
// manifest.
const ManifestPayloadType = "application/vnd.controlfeed.snapshot-manifest.v1"

// Envelope is a DSSE envelope (https://github.com/secure-systems-lab/dsse):
// a payload, its type, and signatures over PAE(type, payload). Its JSON form
// is DSSE's: {"payload":"<base64>","payloadType":"…","signatures":[{"keyid":"…","sig":"<base64>"}]}.
type Envelope struct {
	PayloadType string              `json:"payloadType"`
	Payload     []byte              `json:"payload"`
	Signatures  []EnvelopeSignature `json:"signatures"`
}

// EnvelopeSignature is one signature of an Envelope.
type EnvelopeSignature struct {
	KeyID string `json:"keyid"`
	Sig   []byte `json:"sig"`
}

// SignEnvelope returns an envelope of payload signed by k.
func SignEnvelope(k *PrivateKey, payloadType string, payload []byte) Envelope {
	return Envelope{
		PayloadType: payloadType,
		Payload:     append([]byte(nil), payload...),
		Signatures:  []EnvelopeSignature{{KeyID: k.id, Sig: k.sign(PAE(payloadType, payload))}},
	}
}

// VerifyEnvelope returns env's payload when env has the payload type want
// and at least one signature by a trusted key that verifies; the key id of
// that signature comes with it. Every failure is a *SecurityError whose
// EventID is the payload type.
func (kr *Keyring) VerifyEnvelope(env Envelope, want string) ([]byte, string, error) {
	if env.PayloadType != want {
		return nil, "", securityErr(ReasonMalformed, want, "envelope payload type is %.80q", env.PayloadType)
	}
	if len(env.Signatures) == 0 {
		return nil, "", securityErr(ReasonUnsigned, want, "envelope has no signature")
	}
	msg := PAE(env.PayloadType, env.Payload)
	var unknown []string
	for _, s := range env.Signatures {
		pub, ok := kr.keys[s.KeyID]
		if !ok {
			unknown = append(unknown, fmt.Sprintf("%.40s", s.KeyID))
			continue
		}
		if len(s.Sig) == ed25519.SignatureSize && ed25519.Verify(pub, msg, s.Sig) {
			return env.Payload, s.KeyID, nil
		}
		return nil, "", securityErr(ReasonBadSignature, want, "signature by %s does not verify: the payload was altered or the signature forged", s.KeyID)
	}
	return nil, "", securityErr(ReasonUnknownKey, want, "signed by %s; trusted: %s", strings.Join(unknown, ", "), strings.Join(kr.IDs(), ", "))
}

// ParseEnvelope decodes the JSON form of an envelope, refusing unknown
// members.
func ParseEnvelope(b []byte) (Envelope, error) {
	var env Envelope
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		return Envelope{}, fmt.Errorf("trust: parse envelope: %w", err)
	}
	return env, nil
}
