package outbox

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/controlfeed/controlfeed/trust"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Config's zero fields.
const (
	DefaultPollInterval    = 50 * time.Millisecond
	DefaultBatchSize       = 1024
	DefaultMinBackoff      = 50 * time.Millisecond
	DefaultMaxBackoff      = 5 * time.Second
	DefaultShutdownTimeout = 10 * time.Second
	DefaultCheckpoint      = 100 * time.Millisecond
	DefaultPublishTimeout  = 30 * time.Second

	DefaultDrainerLockInterval = time.Second
)

// Config configures a Pump. A nil *Config and zero fields select the
// defaults; NewPump copies the struct, so changing it later has no effect.
type Config struct {
	// Logger receives the pump's logs; nil discards them.
	Logger *slog.Logger
	// PollInterval is how often Run looks for rows written by other
	// processes (which cannot call Notify). Default 50ms. On PostgreSQL,
	// where Run also wakes on LISTEN/NOTIFY, it is the bound on the delay
	// when a notification is lost.
	PollInterval time.Duration
	// NoListen turns off Run's LISTEN connection on PostgreSQL (one pool
	// connection held for the pump's life): for a server behind a
	// transaction-pooling PgBouncer, where LISTEN does not work. Run then
	// finds other processes' rows by polling only. Ignored on SQLite.
	NoListen bool
	// DrainerLockInterval is, on PostgreSQL, how often the pump holding
	// the outbox's drainer lock checks its lock session, and how often a
	// standby pump tries to take the lock. A holder that cannot confirm
	// its session for two intervals stops publishing; the server ends a
	// holder's session that stays silent for DrainerLockInterval times
	// drainerIdleFactor (idle_session_timeout), releasing the lock. A
	// standby takes over within about one interval of the release.
	// Default 1s.
	DrainerLockInterval time.Duration
	// NoDrainerLock turns off Run's drainer lock on PostgreSQL: every
	// pump publishes, and the feed's order then rests on the Sink's dedup
	// alone. Only for a server behind a transaction-pooling PgBouncer,
	// where session advisory locks do not work: run exactly one pump
	// yourself there. Ignored on SQLite.
	NoDrainerLock bool
	// BatchSize is how many pending rows one read of a pass takes, and the
	// window handed to a feed.BatchAppender at once. It also bounds the
	// rows of one write-back transaction, and a pass has at most twice as
	// many rows published but not yet recorded (a crash republishes them
	// with the same EventIDs). Default 1024: during a backlog the pass's
	// database work (read, decode, write-back) then runs in fewer, longer
	// bursts beside the publishes, which overlapped better than 256 on a
	// 2-vCPU machine (controlfeed bench, pump/sync 0.78 -> 0.85 of raw).
	BatchSize int
	// MinBackoff is the delay before the first retry after a failed pass.
	// Default 50ms.
	MinBackoff time.Duration
	// MaxBackoff caps the delay between retries. Default 5s.
	MaxBackoff time.Duration
	// ShutdownTimeout bounds how long Run, once its context is done, waits
	// for the publish in flight and its write-back. Default 10s.
	ShutdownTimeout time.Duration
	// CheckpointInterval is the least time between two background WAL
	// checkpoints of the database that Run runs after passes that wrote
	// (SQLite: PRAGMA wal_checkpoint(PASSIVE), on a pool connection), so
	// that the producer's commits and the write-backs seldom pay for
	// SQLite's automatic checkpoint. Negative disables it. Default 100ms.
	// Pass never checkpoints.
	CheckpointInterval time.Duration
	// PublishTimeout bounds one call to the Sink (an Append, or an
	// AppendBatch of up to BatchSize events): past it the call's context
	// is canceled, the pass fails at that row, which stays pending, and
	// Run retries with backoff. Default 30s.
	PublishTimeout time.Duration
	// Registerer, if set, receives the pump's histogram
	// (MetricPublishDuration); NewPump fails if it is registered there
	// already (one Pump per registry). nil records none.
	Registerer prometheus.Registerer
	// Signer, if set, signs every event the pump publishes (package
	// trust): in outbox order, each chained to the one published before
	// it, the chain head recorded in the outbox database in the same
	// transaction as the write-back, so a restarted pump, or a standby
	// that takes over, continues the chain (with its own key or the same).
	// Signatures are deterministic: a republish after a crash gives the
	// same bytes. A row whose extra members leave no room for the
	// signature member is marked dead. nil publishes unsigned events.
	Signer *trust.PrivateKey
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = DefaultCheckpoint
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.DrainerLockInterval == 0 {
		c.DrainerLockInterval = DefaultDrainerLockInterval
	}
}

// Validate reports whether c is usable: no negative field, and MinBackoff
// not above MaxBackoff once defaults are applied. A nil *Config is valid.
func (c *Config) Validate() error {
	if c == nil {
		return nil
	}
	d := *c
	d.setDefaults()
	switch {
	case d.PollInterval < 0:
		return fmt.Errorf("outbox: config: PollInterval %v is negative", d.PollInterval)
	case d.BatchSize < 0:
		return fmt.Errorf("outbox: config: BatchSize %d is negative", d.BatchSize)
	case d.MinBackoff < 0:
		return fmt.Errorf("outbox: config: MinBackoff %v is negative", d.MinBackoff)
	case d.MaxBackoff < 0:
		return fmt.Errorf("outbox: config: MaxBackoff %v is negative", d.MaxBackoff)
	case d.PublishTimeout < 0:
		return fmt.Errorf("outbox: config: PublishTimeout %v is negative", d.PublishTimeout)
	case d.DrainerLockInterval < 0:
		return fmt.Errorf("outbox: config: DrainerLockInterval %v is negative", d.DrainerLockInterval)
	case d.ShutdownTimeout < 0:
		return fmt.Errorf("outbox: config: ShutdownTimeout %v is negative", d.ShutdownTimeout)
	case d.MinBackoff > d.MaxBackoff:
		return fmt.Errorf("outbox: config: MinBackoff %v exceeds MaxBackoff %v", d.MinBackoff, d.MaxBackoff)
	}
	return nil
}
