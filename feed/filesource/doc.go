// Package filesource is the local-directory feed backend, registered as
// "file" for both Source and Sink. It needs no infrastructure, its state is
// plain files anyone can inspect, and other programs (a sidecar, a script,
// an operator with a text editor) can drop events into it.
//
// Activate it with a blank import and open it through the feed registry with
// feed.SourceConfig.FileDir set, or call NewSource and NewSink directly.
// Prune removes old events (controlfeed prune is its command line).
//
// # On-disk format
//
// The feed is one flat directory. Every regular file whose name ends in
// ".json" holds exactly one event in the controlevent wire format (one JSON
// object, snake_case fields, at most controlevent.MaxEncodedSize bytes,
// any layout: compact, or indented as json.MarshalIndent writes it; a
// trailing newline is allowed). The event's control_version field is its
// position in the feed; the file name carries no meaning for readers, so
// "<event_id>.json" works as well as the Sink's names. Members controlfeed
// does not know (a predecessor's "id", "tenant_id", "stack_id") and
// created_at as written (any string, "" included) survive: a Source returns
// them in the event (controlevent.Event.Extra, CreatedAtRaw) and a Sink
// writes them back. Files whose names do not end in ".json" are ignored by
// readers.
//
// The Sink names its files after the ControlVersion only, zero-padded to 20
// digits so that names sort in feed order: "00000000000000000042.json" (or
// "00000000000000000042-1.json" if another program's file already has that
// name). The EventID never reaches a file name, so no EventID can make the
// Sink write outside the directory.
//
// Other names in the directory:
//
//   - ".lock": an empty file. Writers hold an exclusive flock(2) on it while
//     they choose a position and write the event; readers hold a shared
//     flock on it while they capture the directory's names (a listing, or
//     the queue of change notifications), never while they read files.
//     Never delete or replace it while the feed is in use.
//   - ".pruned": the prune marker, written by Prune: one JSON object
//     {"format": 1, "pruned_through": N, "high_water": H, "pruned_at":
//     "<RFC 3339>"}. Events at positions <= N may have been deleted; H is
//     the highest position ever taken in the directory when it was pruned.
//     It is replaced atomically (temporary file, fsync, rename, fsync of the
//     directory) under the exclusive lock. Never delete it: writers need H.
//   - ".tmp-*": a temporary file of a Sink or of Prune, renamed to its final
//     name once complete and synced. One present while nobody holds the lock
//     is left over from a crash; a Sink removes such files when it opens.
//
// # Positions
//
// Positions are strictly increasing but need not be dense: a directory
// holding events at 10, 20 and 30, or a single file at 7, is a valid feed,
// and Poll(since) returns every event above since whatever the gaps. The
// Source therefore does not implement feed.GapChecker. Only the prune marker
// puts positions behind retention: a Source asked for the events after a
// cursor below pruned_through reports a *feed.CursorBehindError; without a
// marker no cursor is behind retention, and deleting files by hand only
// leaves gaps (use Prune). Positions above 2^63-1 are invalid: consumers
// record positions as signed 64-bit integers.
//
// # Writing from other programs
//
// A program other than this package may add events if it follows the same
// protocol: take an exclusive flock on ".lock"; read the highest position in
// the directory, the maximum of every ".json" file's control_version and the
// marker's high_water; write the event with control_version = highest + 1 to
// a temporary file whose name does not end in ".json", fsync it, rename it
// (or link(2) it) to a name ending in ".json", fsync the directory; then
// release the lock. Writing the final name in place while holding the lock
// works too. A writer that does not take the lock, or that chooses a
// position at or below one already used, can make a node miss its event; the
// readers report what they can detect (see Errors) but a node that has
// passed a position cannot apply an event written there later.
//
// # Delivery semantics
//
// The Sink assigns the highest position taken in the directory + 1: above
// every file, good or bad (if its position can be read), including files
// written by other programs, and above the marker's high_water, so it never
// gives a position twice, even after every file was pruned. In a directory
// written only by Sinks, positions are 1, 2, 3, ... It is idempotent on
// EventID for as long as the file holding the EventID exists: a retry, from
// this process or another, and after a restart, returns the ControlVersion
// already recorded. Writes are atomic and durable: a file is either absent
// or complete, and Append returns only after the file and the directory
// entry are synced.
//
// The Source returns every event with ControlVersion greater than the
// cursor, ascending, at most Options.MaxBatch per Poll. Because readers and
// writers exclude each other on ".lock", a reader's view of the directory is
// complete with respect to every writer that follows the protocol: it never
// returns an event while an earlier one is still being written or hidden by
// a listing in progress. Two files with the same control_version and the
// same bytes are one event. The Source does not implement feed.Acker: it has
// no broker-side cursor. It implements feed.Waiter and feed.HeadReporter.
//
// # Cost
//
// On Linux both Source and Sink watch the directory with inotify (IN_CREATE,
// IN_CLOSE_WRITE, IN_ATTRIB, IN_MOVED_TO, IN_MOVED_FROM, IN_DELETE and the
// directory's own deletion or move), registered before an initial scan, and
// keep an in-memory index of the directory. A Poll or an Append reads only
// the files that changed since the previous call, so its cost grows with the
// number of new events, not with the history. When the kernel's event queue
// overflows, the index is rebuilt by a full scan. Elsewhere, or if inotify
// is unavailable, each call lists the directory and re-reads only the files
// whose identity, size, modification or change time changed, and the bad
// ones.
//
// # Errors
//
// No file is ever skipped silently. What a Source reports, in this order:
//
//   - An unreadable prune marker, a file whose position cannot be
//     determined (neither its control_version nor a name of digits such as
//     "00000000000000000042.json" can be read), and a late write (a file
//     that appeared at or below a position the Source had already
//     delivered: it returned it, or was polled from a cursor at or above it
//     within the feed; wraps ErrLateWrite): every Poll from at or above the
//     file's position fails, naming the file, until it is fixed or removed.
//     The operator fixes the file, or removes it and appends its event
//     again through a Sink. A Poll from below it (the consumer halted at a
//     later event, and polls again from its cursor) has not passed it: the
//     file is then read in order, as a Source started then would read it.
//   - A cursor below the marker: a *feed.CursorBehindError.
//   - A bad file at a known position P (not a valid event, per
//     controlevent.Decode then Event.Validate): Poll returns the valid events
//     below P first, then fails with a *feed.InvalidEventError for P (its
//     EventID is the file's event_id if readable and valid, else
//     feed.UnreadableEventID(P); its Err names the file and wraps
//     controlevent.ErrInvalid) on every call until the cursor passes P. A
//     consumer halts there; the operator fixes the file, or skips the event
//     (controlfeed skip).
//   - Files at one position that are not one event (different event_ids,
//     different bytes, or a valid event beside a bad file): the events
//     below first, then an error wrapping ErrConflict naming the files,
//     until the wrong one is removed.
//
// The Sink refuses to append while the marker is unreadable or a file's
// position cannot be determined, since it could not choose a position
// safely. Lock waits end with ctx or after Options.LockTimeout (the error
// then wraps feed.ErrUnavailable). Operations after Close return errors
// wrapping feed.ErrClosed. Nothing is retried internally.
//
// The package requires a Unix system (flock(2)).
package filesource

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/controlfeed/controlfeed/feed"
)

// Name is the name this backend is registered under, for both Source and Sink.
const Name = "file"

// DefaultMaxBatch is the default bound on the number of events one Poll returns.
const DefaultMaxBatch = 1024

// DefaultLockTimeout is how long a Source, a Sink or Prune waits by default
// for the directory's lock while another process holds it.
const DefaultLockTimeout = 10 * time.Second

// ErrLateWrite is wrapped by the error a Source returns for a file that
// appeared at or below a position it had already delivered: consumers past
// that position never apply it. Remove the file and append its event again
// through a Sink.
var ErrLateWrite = errors.New("event file written at a position already delivered")

// ErrConflict is wrapped by the error a Source returns when files that claim
// the same position are not one event (different event_ids, different bytes,
// or a valid event beside an invalid file). Remove the wrong file.
var ErrConflict = errors.New("files claim the same position for different content")

func init() {
	feed.Register(Name, func(cfg feed.SourceConfig) (feed.Source, error) {
		return NewSource(cfg.FileDir, nil)
	})
	feed.RegisterSink(Name, func(cfg feed.SourceConfig) (feed.Sink, error) {
		return NewSink(cfg.FileDir, nil)
	})
}

var (
	_ feed.Source       = (*Source)(nil)
	_ feed.Waiter       = (*Source)(nil)
	_ feed.HeadReporter = (*Source)(nil)
	_ feed.Sink         = (*Sink)(nil)
)

// Options configures a Source or a Sink. A nil *Options or the zero value
// selects the defaults.
type Options struct {
	// Logger receives operational messages (index rebuilds, removal of
	// stale temporary files). Nil discards them.
	Logger *slog.Logger

	// MaxBatch bounds the number of events one Source.Poll returns.
	// Zero means DefaultMaxBatch. Ignored by the Sink.
	MaxBatch int

	// LockTimeout bounds how long a call waits for the directory's lock
	// file while another process holds it (a Source's shared lock, a
	// Sink's exclusive lock); past it the call fails with an error
	// wrapping feed.ErrUnavailable. The call's context bounds the wait
	// too. Zero means DefaultLockTimeout.
	LockTimeout time.Duration
}

// Validate reports whether o holds acceptable values. A nil o is valid.
func (o *Options) Validate() error {
	if o == nil {
		return nil
	}
	if o.MaxBatch < 0 {
		return fmt.Errorf("filesource: options: MaxBatch is %d; it must be >= 0 (0 selects %d)", o.MaxBatch, DefaultMaxBatch)
	}
	if o.LockTimeout < 0 {
		return fmt.Errorf("filesource: options: LockTimeout is %v; it must be >= 0 (0 selects %v)", o.LockTimeout, DefaultLockTimeout)
	}
	return nil
}

// withDefaults returns a copy of o with defaults applied.
func (o *Options) withDefaults() Options {
	var c Options
	if o != nil {
		c = *o
	}
	c.setDefaults()
	return c
}

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.LockTimeout == 0 {
		o.LockTimeout = DefaultLockTimeout
	}
}

var errEmptyDir = errors.New("directory is empty (set feed.SourceConfig.FileDir)")
