package trust

import (
	"errors"
	"fmt"
)

// ErrSecurity matches every verification failure of this package: a node
// that sees it must not apply the event and must stop in its security-halted
// state (an explicit, logged override is the only way past it).
var ErrSecurity = errors.New("security check failed")

// Sentinels for each Reason; errors.Is(err, ErrUnsigned) etc. hold for a
// *SecurityError of that reason.
var (
	ErrUnsigned     = errors.New("event is not signed")
	ErrMalformed    = errors.New("signature is malformed")
	ErrUnknownKey   = errors.New("signed by a key that is not trusted")
	ErrBadSignature = errors.New("signature does not verify")
	ErrChainGap     = errors.New("events are missing before this one")
	ErrChainReplay  = errors.New("event is older than the chain head")
	ErrChainFork    = errors.New("event does not follow the chain head")
)

// Reason names why an event failed verification.
type Reason int

// The reasons, one per way an event can fail.
const (
	ReasonUnsigned Reason = iota + 1
	ReasonMalformed
	ReasonUnknownKey
	ReasonBadSignature
	ReasonChainGap
	ReasonChainReplay
	ReasonChainFork
)

var reasonNames = map[Reason]string{
	ReasonUnsigned:     "unsigned",
	ReasonMalformed:    "malformed-signature",
	ReasonUnknownKey:   "unknown-key",
	ReasonBadSignature: "bad-signature",
	ReasonChainGap:     "chain-gap",
	ReasonChainReplay:  "chain-replay",
	ReasonChainFork:    "chain-fork",
}

var reasonErrs = map[Reason]error{
	ReasonUnsigned:     ErrUnsigned,
	ReasonMalformed:    ErrMalformed,
	ReasonUnknownKey:   ErrUnknownKey,
	ReasonBadSignature: ErrBadSignature,
	ReasonChainGap:     ErrChainGap,
	ReasonChainReplay:  ErrChainReplay,
	ReasonChainFork:    ErrChainFork,
}

// String returns the reason's stable name, used in status, metrics labels
// and logs ("unsigned", "bad-signature", "chain-gap", ...).
func (r Reason) String() string {
	if s, ok := reasonNames[r]; ok {
		return s
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// SecurityError is a verification failure of one event.
type SecurityError struct {
	Reason  Reason
	EventID string // the event that failed, as delivered
	Detail  string // what was found, without secrets (key ids and digests are not secret)
}

// Error says which event failed, why, and what the operator does next.
func (e *SecurityError) Error() string {
	return fmt.Sprintf("trust: event %.80q: %s: %s (%s); the node must not apply it: find out who wrote it, then see docs/SECURITY.md",
		e.EventID, reasonErrs[e.Reason], e.Detail, e.Reason)
}

// Is makes errors.Is match ErrSecurity and the reason's sentinel.
func (e *SecurityError) Is(target error) bool {
	return target == ErrSecurity || target == reasonErrs[e.Reason]
}

func securityErr(r Reason, eventID, format string, args ...any) error {
	return &SecurityError{Reason: r, EventID: eventID, Detail: fmt.Sprintf(format, args...)}
}
