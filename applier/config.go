package applier

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"

	"github.com/controlfeed/controlfeed/trust"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/controlfeed/controlfeed/controlevent"
)

// Handler applies one event inside tx. It must use only tx, never the
// *sql.DB, so that its effects commit or roll back together with the
// event's controlfeed_applied_events row and the cursor. payload is the
// verified artifact content (nil when the event has no ArtifactRef); the
// handler must not keep it after returning.
//
// A Handler may run more than once for the same event: a catch-up batch is
// first tried without per-event savepoints and, if one event fails, rolled
// back and redone with them, so handlers before the failing one run again
// in the new transaction. Only the run whose transaction commits counts,
// which is why a handler must have no effect outside tx.
//
// A Handler returning an error halts the applier at the event, unless the
// error is the infrastructure's (a full disk, a busy database, a timeout,
// an error wrapping feed.ErrUnavailable: see the package doc), which makes
// the applier unavailable and retry instead; the error is shown to
// operators, so it should name what was wrong and wrap its cause with %w. The applier calls
// handlers from one goroutine at a time. A Handler must be deterministic
// given the database state and the event: every node runs it, and nodes stay
// identical only if it does the same thing everywhere.
type Handler func(ctx context.Context, tx *sql.Tx, ev controlevent.Event, payload []byte) error

// Defaults used for zero fields of Config.
const (
	DefaultPollInterval    = 50 * time.Millisecond
	DefaultMaxBatch        = 256
	DefaultMinBackoff      = 100 * time.Millisecond
	DefaultMaxBackoff      = 10 * time.Second
	DefaultMaxPayloadBytes = 256 << 20
	DefaultCallTimeout     = time.Minute
)

// Config configures an Applier. A nil *Config or zero fields select the
// documented defaults.
type Config struct {
	// Handlers maps an event Type to its Handler. An event whose Type has no
	// handler halts the applier like any other failure.
	Handlers map[string]Handler
	// Logger receives halts, unavailability, gaps, resumptions, ack
	// failures and behind-retention reports. nil discards logs.
	Logger *slog.Logger
	// PollInterval is how often Run polls when the Source does not implement
	// feed.Waiter. Default DefaultPollInterval.
	PollInterval time.Duration
	// MaxBatch is the most events applied in one catch-up transaction.
	// Default DefaultMaxBatch.
	MaxBatch int
	// MinBackoff and MaxBackoff bound the delay between retries of a halted
	// event, an unavailable feed, store or database, and a gap: it doubles
	// from MinBackoff up to MaxBackoff, with jitter. MaxBackoff is also the interval at which a
	// node behind the feed's retention re-checks. Defaults
	// DefaultMinBackoff, DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// MaxPayloadBytes is the largest artifact the applier fetches; a larger
	// one halts the applier. Default DefaultMaxPayloadBytes.
	MaxPayloadBytes int64
	// CallTimeout bounds each call the applier makes to the feed (Poll,
	// Head, CheckGap, Ack, and each Wait, which then counts as a spurious
	// wake-up) and to the artifact store (one artifact's fetch). A call
	// that outlives it is canceled and the round fails as unavailable,
	// retried with backoff; while a call runs, Status.Waiting names it.
	// Raise it for very large artifacts on slow links. Database calls are
	// bounded by SQLite's busy timeout instead. Default DefaultCallTimeout.
	CallTimeout time.Duration
	// Registerer, if set, receives the applier's histograms
	// (MetricApplyDuration, MetricEventAge); New fails if they are
	// registered there already (one Applier per registry). nil records
	// none. Observing costs a few atomic adds per committed transaction.
	Registerer prometheus.Registerer
	// Keyring, if set, is the set of producer keys this node trusts: every
	// event must carry a valid signature by one of them and follow the
	// chain head the node last committed (see package trust), checked
	// before anything else is done with the event. An event that fails is
	// never applied: the node stops in StateSecurityHalted, which a plain
	// Skip refuses (see SkipSecurityHalt). nil (the default) checks
	// nothing: anyone who can write to the feed can make the node apply
	// their event (see docs/SECURITY.md).
	Keyring *trust.Keyring
}

func (c *Config) setDefaults() {
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
		if c.MaxBackoff < c.MinBackoff {
			c.MaxBackoff = c.MinBackoff
		}
	}
	if c.MaxPayloadBytes == 0 {
		c.MaxPayloadBytes = DefaultMaxPayloadBytes
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = DefaultCallTimeout
	}
}

// Validate reports whether c is usable: no negative durations or sizes,
// MinBackoff <= MaxBackoff when both are set, and no empty Type or nil
// Handler in Handlers. Zero fields are valid (they select defaults).
func (c *Config) Validate() error {
	switch {
	case c.PollInterval < 0:
		return fmt.Errorf("applier: config: PollInterval %v is negative", c.PollInterval)
	case c.CallTimeout < 0:
		return fmt.Errorf("applier: config: CallTimeout %v is negative", c.CallTimeout)
	case c.MaxBatch < 0:
		return fmt.Errorf("applier: config: MaxBatch %d is negative", c.MaxBatch)
	case c.MinBackoff < 0:
		return fmt.Errorf("applier: config: MinBackoff %v is negative", c.MinBackoff)
	case c.MaxBackoff < 0:
		return fmt.Errorf("applier: config: MaxBackoff %v is negative", c.MaxBackoff)
	case c.MinBackoff > 0 && c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff:
		return fmt.Errorf("applier: config: MinBackoff %v exceeds MaxBackoff %v", c.MinBackoff, c.MaxBackoff)
	case c.MaxPayloadBytes < 0:
		return fmt.Errorf("applier: config: MaxPayloadBytes %d is negative", c.MaxPayloadBytes)
	}
	for typ, h := range c.Handlers {
		if typ == "" {
			return fmt.Errorf("applier: config: handler registered for an empty event type")
		}
		if h == nil {
			return fmt.Errorf("applier: config: nil handler for event type %q", typ)
		}
	}
	return nil
}
