// Package trust signs control events and snapshot manifests with ed25519 and
// verifies them, and chains each signed event to its predecessor so that a
// node can tell a dropped, reordered, replayed or injected event from the
// feed it was promised. It is pure functions over bytes: no I/O, no clock,
// no global state. Reading key files, flags and the environment is the
// caller's job.
//
// # Keys
//
// A key pair is an ed25519 key. Its key id is derived from the public key
// ("ed25519:" followed by the first 16 hex digits of the sha256 of the 32
// public key bytes), so a key id names exactly one public key and a trust
// entry written as ID=KEY can be checked for consistency. [MarshalPrivateKey]
// and [MarshalPublicKey] give the text files `controlfeed keys generate`
// writes; a PrivateKey never prints its secret (String and GoString show the
// key id only).
//
// # Canonical encoding of an event
//
// A signature covers bytes specified here, never "json.Marshal of the
// struct". The body of an event is the concatenation of these lines, in this
// order, each written as name "=" LEN ":" value "\n", where LEN is the byte
// length of value in ASCII decimal and value is the raw bytes (UTF-8 text,
// no escaping):
//
//	event_id      the EventID
//	type          the Type
//	key           the Key ("" when empty)
//	version       Version in decimal ("0" when unset)
//	base_version  BaseVersion in decimal
//	artifact_ref  the ArtifactRef
//	checksum      the Checksum
//	created_at    the created_at text as carried on the wire (Event.CreatedAtText)
//	extra         the canonical Extra without the signature member ("" when none)
//	seq           the producer's chain sequence number in decimal (1 for the first event)
//	prev          the chain digest of the predecessor ("" for seq 1)
//
// ControlVersion is not covered: the broker stamps it after signing, and a
// node checks order through seq and prev instead. The chain digest of an
// event is "sha256:" + hex(sha256(body)); it does not depend on the signing
// key, so a standby producer with its own key that republishes an event the
// previous pump had published continues the same chain.
//
// The signed message is DSSE's pre-authentication encoding of the payload
// type and the body followed by the producer line:
//
//	PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body
//	type            = "application/vnd.controlfeed.event.v1"
//	signed body     = body || "producer=" LEN ":" keyid "\n"
//
// so a signature binds the producer's key id too. testdata/vectors.json holds
// golden vectors; a change to this encoding must change them (and the
// payload type's version).
//
// # Wire form
//
// The signature travels in the event as one extra member, named by
// SignatureMember:
//
//	"controlfeed_sig": {"kid":"ed25519:…","prev":"sha256:…","seq":42,"sig":"<base64>","v":1}
//
// so every backend, the outbox and the codec carry it unchanged, and a node
// without trusted keys ignores it as it ignores any unknown member.
//
// # Chain
//
// A node keeps the Head of the chain (seq and digest of the last signed
// event it applied or skipped) in the same transaction as its cursor.
// Head.Check classifies the next event: seq = head+1 and prev = head's
// digest is the only accepted successor; a higher seq means events are
// missing (dropped, or delivered out of order); a lower or equal seq is a
// replay (harmless when the node already applied that very event, which a
// republish after the broker's duplicate window produces) or a fork; the
// right seq with the wrong prev is an injected or altered predecessor.
//
// # Errors
//
// Every verification failure is a *SecurityError whose Reason says which
// case it is; errors.Is(err, ErrSecurity) holds for all of them, and
// errors.Is(err, ErrUnsigned) etc. for each reason's sentinel.
package trust
