// Package controlevent defines the control event: the small, ordered
// notification that travels through a controlfeed feed from a control plane
// to every fleet node.
//
// An event names a change (its Type and Key) and references its payload by
// content address (ArtifactRef + Checksum); it never carries the payload
// itself. The producer assigns EventID; the broker assigns ControlVersion.
//
// # Wire format
//
// Events are encoded as one JSON object with these snake_case members. This
// is the on-disk format of the file feed and the message body on JetStream,
// so other programs may produce and read it:
//
//	{
//	  "event_id":        "0190f7d2-...",          // required, producer-assigned, UUIDv7 by convention
//	  "type":            "kv.put",                // required, application-defined
//	  "key":             "tenants/acme",          // the resource the event is about
//	  "version":         4,                       // the resource's new version
//	  "base_version":    3,                       // the resource's prior version
//	  "artifact_ref":    "sha256:9f86d0...",      // content address of the payload, optional
//	  "checksum":        "sha256:9f86d0...",      // sha256 of the payload; required with artifact_ref
//	  "control_version": 17,                      // broker-assigned position, > 0 once published
//	  "created_at":      "2026-11-27T10:00:00Z",  // informational: producer clock, any string
//	  "tenant_id":       "acme"                   // any other member is kept (see Extra)
//	}
//
// Marshal writes the known members in the order above (key, version,
// base_version, artifact_ref and checksum only when non-zero), then the
// other members sorted by name, without insignificant whitespace. Decode
// accepts any member order and JSON whitespace (such as the indented layout
// of json.MarshalIndent). So an event decoded and encoded again is the same
// JSON object, with the same members and values; only whitespace and member
// order may change. Two exceptions, neither of which a controlfeed producer
// writes: a missing or null created_at is written back as the zero time
// "0001-01-01T00:00:00Z", and null in another known member is that member's
// zero value (written back as such or omitted).
//
// created_at is informational and lenient: any JSON string is accepted,
// including "" and layouts other than RFC 3339. When the string is RFC 3339
// (as time.Time.UnmarshalText reads it) it is parsed into CreatedAt. When the
// literal as written is not exactly what Marshal writes for CreatedAt (an
// empty string, another layout, an offset written "+00:00", trailing zeros
// in the fraction, an escape), it is kept in CreatedAtRaw and written back
// as written. A created_at that is neither a string nor null is an error.
//
// Members controlfeed does not know (a sidecar's "id", "tenant_id",
// "stack_id", nested objects and arrays) are kept in Extra as one JSON
// object in canonical form: exactly what json.Marshal writes for them as a
// map[string]json.RawMessage, i.e. members sorted by name (byte order),
// names decoded and written as encoding/json writes strings, values as
// written minus insignificant whitespace (members of nested objects keep
// their order), with <, >, &, U+2028 and U+2029 escaped as \u003c, \u003e,
// \u0026, \u2028 and \u2029. Marshal writes them after the known members, so
// they reach the outbox, the feed, every node's handlers (ExtraField) and
// the applier's event digest: two events that differ only in an unknown
// member are different events.
//
// Known members follow encoding/json's rules for their Go types: strings
// are JSON strings (invalid UTF-8 becomes U+FFFD), the integers are integer
// literals in range (no fraction, no exponent), and null is the zero value.
// Decode is stricter than json.Unmarshal in three ways, so that every
// reader sees the same event: a member name that appears twice (after
// unescaping) is an error, since readers disagree on which copy counts and
// Extra could not hold both; a member whose name equals a known member's
// only up to case or Unicode folding (such as "Type", "EVENT_ID" or "\u212aey"
// with a Kelvin sign, which encoding/json reads as "type", "event_id" and
// "key" and a case-sensitive reader does not) is an error; and null is not
// an event (json.Unmarshal takes it as "no change"). Like json.Unmarshal, it
// rejects anything but JSON whitespace (space, tab, CR, LF; not U+00A0,
// U+2028 or a byte order mark) before or after the object, and a value that
// is not an object.
//
// # Validation
//
// Validate is strict and meant for the consumer side, where an event must
// have been stamped by a broker: ControlVersion is between 1 and
// math.MaxInt64 (nodes store positions as signed 64-bit integers), event_id
// and type are non-empty identifiers, a checksum is well-formed; created_at
// is never checked beyond being a JSON string. Every failure wraps
// ErrInvalid. Its size limits guarantee that the encoding of every event
// that passes it (or ValidateUnpublished) fits in MaxEncodedSize, so a
// consumer can decode whatever a producer validated.
package controlevent

import (
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Limits on field sizes. Events are small notifications; anything larger is a
// producer bug or hostile input and is rejected by Validate. Together they
// keep the encoding of a valid event below MaxEncodedSize: the known members
// take at most about 10 KiB even when every byte needs an escape.
const (
	MaxEventIDLen     = 128
	MaxTypeLen        = 128
	MaxKeyLen         = 1024
	MaxArtifactRefLen = 256
	// MaxCreatedAtRawLen bounds CreatedAtRaw as Marshal writes it, quotes
	// and escapes included.
	MaxCreatedAtRawLen = 1024
	// MaxExtraLen bounds Extra in its canonical form (as Marshal writes
	// it): the JSON text of the members controlfeed does not know.
	MaxExtraLen = 48 << 10
)

// ErrInvalid is wrapped by every error Validate returns.
var ErrInvalid = errors.New("invalid control event")

// Event is one control event. The zero value is not valid.
//
// Events are plain values: copying one is safe and the receiver of a slice
// of events owns it.
type Event struct {
	// EventID is the producer-assigned identity of the change and the
	// idempotent-publish key: publishing the same EventID twice resolves to
	// the same ControlVersion within the backend's dedup window, and a
	// consumer applies an EventID at most once.
	EventID string `json:"event_id"`
	// Type selects the consumer-side handler, e.g. "kv.put".
	Type string `json:"type"`
	// Key names the resource the event is about.
	Key string `json:"key,omitempty"`
	// Version is the resource's version after this change.
	Version int64 `json:"version,omitempty"`
	// BaseVersion is the resource's version before this change.
	BaseVersion int64 `json:"base_version,omitempty"`
	// ArtifactRef is the content address of the payload in the artifact
	// store; empty when the event has no payload.
	ArtifactRef string `json:"artifact_ref,omitempty"`
	// Checksum is "sha256:<64 lowercase hex>" of the payload. Required
	// whenever ArtifactRef is set.
	Checksum string `json:"checksum,omitempty"`
	// ControlVersion is the broker-assigned, strictly increasing position
	// of the event in the feed: 0 on the producer side, > 0 once published.
	ControlVersion uint64 `json:"control_version"`
	// CreatedAt is when the producer created the event (its own clock),
	// for information only: nothing in controlfeed orders or rejects events
	// by it. It is the zero Time when created_at is missing, null, or a
	// string that is not RFC 3339.
	CreatedAt time.Time `json:"created_at"`
	// CreatedAtRaw is the created_at member exactly as Decode read it: a
	// JSON string literal, quotes and escapes included (with <, >, &,
	// U+2028 and U+2029 escaped as in Extra), such as `""` or
	// `"2026-11-27 10:00"`. Decode sets it only when the literal is not what
	// Marshal writes for CreatedAt, so events built in Go and events read
	// from a canonical encoding leave it empty. When it is set, Marshal
	// writes it instead of CreatedAt: clear it when you change CreatedAt.
	// Validate requires a JSON string literal of at most MaxCreatedAtRawLen
	// bytes. CreatedAtText returns the string it holds.
	CreatedAtRaw string `json:"-"`
	// Extra holds the members of the encoded object that are not fields of
	// Event (for example "tenant_id" or "stack_id" written by another
	// producer), as the JSON text of one object in the canonical form the
	// package documentation describes, or "" when there are none. Decode
	// fills it and Marshal writes its members after the known ones, so they
	// survive a decode and re-encode and take part in the applier's event
	// digest. A producer may set it to any JSON object (EncodeExtra builds
	// one from a map); Marshal writes the canonical form of what it holds.
	// Validate rejects an Extra that is not a JSON object, names a member
	// twice, names a known member (also up to case), or is longer than
	// MaxExtraLen. ExtraFields and ExtraField read it.
	Extra string `json:"-"`
}

// NewEventID returns a fresh UUIDv7 string: unique, and roughly ordered by
// creation time, which keeps outbox indexes and logs readable. It panics only
// if the system's random source fails.
func NewEventID() string {
	return uuid.Must(uuid.NewV7()).String()
}

// Validate reports whether e is a well-formed, broker-stamped event. It
// rejects an empty EventID or Type, a zero ControlVersion or one above
// math.MaxInt64 (positions are stored as signed 64-bit integers), over-long
// fields, invalid UTF-8 or control characters in identifiers, a malformed
// Checksum, an ArtifactRef without a Checksum, and a malformed or over-long
// CreatedAtRaw or Extra. CreatedAt itself is never checked. Every error
// wraps ErrInvalid.
func (e Event) Validate() error {
	return e.validate(false)
}

// validate is Validate; extraCanonical says that Extra is known to be in
// canonical form already (decodeFast builds it so), which leaves only its
// length to check.
func (e Event) validate(extraCanonical bool) error {
	if err := e.validateFields(extraCanonical); err != nil {
		return err
	}
	if e.ControlVersion == 0 {
		return e.invalid("control_version is 0 (the event was never published)")
	}
	if e.ControlVersion > math.MaxInt64 {
		return e.invalid(fmt.Sprintf("control_version %d is above %d, the highest position a feed can have", e.ControlVersion, int64(math.MaxInt64)))
	}
	return nil
}

// ValidateUnpublished is the producer-side check: every rule of Validate
// except that ControlVersion must be 0, since the broker has not stamped the
// event yet. Every error wraps ErrInvalid.
func (e Event) ValidateUnpublished() error {
	if err := e.validateFields(false); err != nil {
		return err
	}
	if e.ControlVersion != 0 {
		return e.invalid(fmt.Sprintf("control_version is %d; an unpublished event must have 0", e.ControlVersion))
	}
	return nil
}

func (e Event) validateFields(extraCanonical bool) error {
	if e.EventID == "" {
		return e.invalid("event_id is empty")
	}
	if err := checkIdent("event_id", e.EventID, MaxEventIDLen); err != nil {
		return e.invalid(err.Error())
	}
	if e.Type == "" {
		return e.invalid("type is empty")
	}
	if err := checkIdent("type", e.Type, MaxTypeLen); err != nil {
		return e.invalid(err.Error())
	}
	if len(e.Key) > MaxKeyLen {
		return e.invalid(fmt.Sprintf("key is %d bytes; the limit is %d", len(e.Key), MaxKeyLen))
	}
	if !utf8.ValidString(e.Key) {
		return e.invalid("key is not valid UTF-8")
	}
	if len(e.ArtifactRef) > MaxArtifactRefLen {
		return e.invalid(fmt.Sprintf("artifact_ref is %d bytes; the limit is %d", len(e.ArtifactRef), MaxArtifactRefLen))
	}
	if e.ArtifactRef != "" {
		if err := checkIdent("artifact_ref", e.ArtifactRef, MaxArtifactRefLen); err != nil {
			return e.invalid(err.Error())
		}
		if e.Checksum == "" {
			return e.invalid("artifact_ref is set but checksum is empty")
		}
	}
	if e.Checksum != "" {
		if err := ParseChecksum(e.Checksum); err != nil {
			return e.invalid(err.Error())
		}
	}
	if e.CreatedAtRaw != "" {
		if err := checkRawTime(e.CreatedAtRaw); err != nil {
			return e.invalid(err.Error())
		}
		if n := htmlSafeLen(e.CreatedAtRaw); n > MaxCreatedAtRawLen {
			return e.invalid(fmt.Sprintf("created_at as written is %d bytes; the limit is %d", n, MaxCreatedAtRawLen))
		}
	}
	if e.Extra != "" {
		if len(e.Extra) > MaxEncodedSize {
			return e.invalid(fmt.Sprintf("extra members are %d bytes; the limit is %d", len(e.Extra), MaxExtraLen))
		}
		x := e.Extra
		if !extraCanonical {
			var err error
			if x, err = canonicalExtra(e.Extra); err != nil {
				return e.invalid(err.Error())
			}
		}
		if len(x) > MaxExtraLen {
			return e.invalid(fmt.Sprintf("extra members are %d bytes; the limit is %d", len(x), MaxExtraLen))
		}
	}
	return nil
}

func (e Event) invalid(reason string) error {
	id := e.EventID
	if len(id) > 64 {
		id = id[:64] + "..."
	}
	return fmt.Errorf("controlevent: event %q: %s: %w", id, reason, ErrInvalid)
}

// checkIdent rejects over-long values, invalid UTF-8 and control characters
// (including NUL) in identifier-like fields.
func checkIdent(field, v string, max int) error {
	if len(v) > max {
		return fmt.Errorf("%s is %d bytes; the limit is %d", field, len(v), max)
	}
	if !utf8.ValidString(v) {
		return fmt.Errorf("%s is not valid UTF-8", field)
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%s contains control character %U", field, r)
		}
	}
	return nil
}
