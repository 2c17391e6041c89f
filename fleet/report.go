package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Format is the report format this package writes and reads.
const Format = 1

// MaxReportBytes bounds an encoded report; a larger one is refused by Put
// and by readers.
const MaxReportBytes = 64 << 10

// MaxRecentSkipped bounds Report.RecentSkipped.
const MaxRecentSkipped = 64

// Report is what one node says about itself. See the package documentation
// for the JSON form. A zero pointer field is null: the node does not know
// it (Head without a feed.HeadReporter) or the state is absent (Halted).
type Report struct {
	// Format is Format.
	Format int `json:"format"`
	// Node is the node's name (its --node-name), the report's key.
	Node string `json:"node"`
	// Version is the controlfeed version the node runs.
	Version string `json:"version,omitempty"`
	// StartedAt is when the node's process started; ReportedAt when this
	// report was taken (both by the node's clock). Seq counts the reports
	// of this process, from 1.
	StartedAt  time.Time `json:"started_at"`
	ReportedAt time.Time `json:"reported_at"`
	Seq        uint64    `json:"seq"`
	// State is the applier's state: "starting", "applying", "halted",
	// "unavailable", "gap" or "behind_retention".
	State string `json:"state"`
	// Cursor is the highest ControlVersion the node has moved past (the
	// state digest's cursor).
	Cursor uint64 `json:"cursor"`
	// Head is the feed's newest ControlVersion as the node last saw it,
	// Lag is Head - Cursor; null when the node's feed does not report its
	// head.
	Head *uint64 `json:"head"`
	Lag  *uint64 `json:"lag"`
	// Applied and Skipped count the node's recorded events by outcome.
	Applied int64 `json:"applied"`
	Skipped int64 `json:"skipped"`
	// Halted is the event the node cannot apply, or null.
	Halted *Halt `json:"halted"`
	// Unavailable is the infrastructure the node cannot use, or null.
	Unavailable *Unavailable `json:"unavailable"`
	// Problem explains a gap in the feed, a cursor behind the feed's
	// retention or a feed whose head fell below the cursor; "" otherwise.
	Problem string `json:"problem,omitempty"`
	// StateDigest is the node's state digest at its cursor and
	// DigestCheckpoints earlier ones, newest first (see
	// applier.StateDigest): two nodes that applied the same events have
	// equal digests at every common position.
	StateDigest       Digest   `json:"state_digest"`
	DigestCheckpoints []Digest `json:"digest_checkpoints,omitempty"`
	// AppDigest is the application's digest of its own tables at a cursor
	// (kv: its table), which catches local edits; null when the
	// application has none or it was not computed yet.
	AppDigest *AppDigest `json:"app_digest"`
	// RecentSkipped are the newest events the node skipped (an operator's
	// "controlfeed skip"), at most MaxRecentSkipped, newest first: what
	// tells a skipped event from an applied one at a position below the
	// cursor.
	RecentSkipped []SkippedEvent `json:"recent_skipped,omitempty"`
}

// Digest is a digest as of a cursor.
type Digest struct {
	Cursor uint64 `json:"cursor"`
	Digest string `json:"digest"`
}

// AppDigest is an application digest at a cursor and when it was taken.
type AppDigest struct {
	Cursor uint64    `json:"cursor"`
	Digest string    `json:"digest"`
	At     time.Time `json:"at"`
}

// Halt is the event a node is halted at.
type Halt struct {
	EventID        string    `json:"event_id"`
	ControlVersion uint64    `json:"control_version"`
	Type           string    `json:"type"`
	Error          string    `json:"error"`
	Attempts       int       `json:"attempts"`
	Since          time.Time `json:"since"`
	// Security is set when the event failed the node's trust checks (a
	// security halt, which only an explicit override passes): why.
	Security string `json:"security,omitempty"`
}

// Unavailable is the infrastructure a node cannot use (the feed, the
// artifact store, its database): it retries by itself.
type Unavailable struct {
	Op             string    `json:"op"`
	EventID        string    `json:"event_id,omitempty"`
	ControlVersion uint64    `json:"control_version,omitempty"`
	Error          string    `json:"error"`
	Since          time.Time `json:"since"`
}

// SkippedEvent is an event a node skipped.
type SkippedEvent struct {
	EventID        string `json:"event_id"`
	ControlVersion uint64 `json:"control_version"`
}

// ErrInvalidReport is wrapped by Validate's and Decode's errors.
var ErrInvalidReport = errors.New("invalid node report")

// Validate reports a report that no reader should accept: another format,
// an invalid node name.
func (r *Report) Validate() error {
	if r.Format != Format {
		return fmt.Errorf("fleet: report of %q: format %d, this controlfeed reads %d (upgrade it): %w", r.Node, r.Format, Format, ErrInvalidReport)
	}
	if err := ValidateNodeName(r.Node); err != nil {
		return fmt.Errorf("%w: %w", err, ErrInvalidReport)
	}
	return nil
}

// Encode returns r as JSON after Validate, or an error if it exceeds
// MaxReportBytes.
func Encode(r Report) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("fleet: encode report of %q: %w", r.Node, err)
	}
	if len(b) > MaxReportBytes {
		return nil, fmt.Errorf("fleet: report of %q is %d bytes, over %d", r.Node, len(b), MaxReportBytes)
	}
	return b, nil
}

// Decode parses and validates one encoded report. Unknown keys are
// ignored.
func Decode(b []byte) (Report, error) {
	var r Report
	if len(b) > MaxReportBytes {
		return r, fmt.Errorf("fleet: decode report: %d bytes, over %d: %w", len(b), MaxReportBytes, ErrInvalidReport)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("fleet: decode report: %w: %w", err, ErrInvalidReport)
	}
	return r, r.Validate()
}

// ValidateNodeName accepts the names a report may carry: 1 to 128 bytes of
// [A-Za-z0-9_.-], not starting with '.' (so every backend can use the name
// as a file name and a key/value key as it is).
func ValidateNodeName(name string) error {
	if name == "" || len(name) > 128 || name[0] == '.' {
		return fmt.Errorf("fleet: node name %q: want 1 to 128 characters of A-Z a-z 0-9 _ . - not starting with '.' (set --node-name)", name)
	}
	for i := 0; i < len(name); i++ {
		ch := name[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '_' || ch == '-' || ch == '.') {
			return fmt.Errorf("fleet: node name %q: character %q not allowed: want A-Z a-z 0-9 _ . - (set --node-name)", name, ch)
		}
	}
	return nil
}
