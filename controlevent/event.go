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
// Events are encoded as JSON objects with these snake_case fields. This is
// the on-disk format of the file feed and the message body on JetStream, so
// other programs may produce and read it:
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
//	  "created_at":      "2026-11-27T10:00:00Z"   // RFC 3339, producer clock
//	}
//
// Unknown fields are ignored by decoders so the format can grow.
//
// # Validation
//
// Validate is strict and meant for the consumer side, where an event must
// have been stamped by a broker. Every failure wraps ErrInvalid.
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
// producer bug or hostile input and is rejected by Validate.
const (
	MaxEventIDLen     = 128
	MaxTypeLen        = 128
	MaxKeyLen         = 1024
	MaxArtifactRefLen = 256
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
	// CreatedAt is when the producer created the event (its own clock).
	CreatedAt time.Time `json:"created_at"`
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
// Checksum, and an ArtifactRef without a Checksum. Every error wraps
// ErrInvalid.
func (e Event) Validate() error {
	if err := e.validateFields(); err != nil {
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
	if err := e.validateFields(); err != nil {
		return err
	}
	if e.ControlVersion != 0 {
		return e.invalid(fmt.Sprintf("control_version is %d; an unpublished event must have 0", e.ControlVersion))
	}
	return nil
}

func (e Event) validateFields() error {
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
