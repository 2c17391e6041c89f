// Package filesource is the local-directory feed backend, registered as
// "file" for both Source and Sink. It needs no infrastructure, its state is
// plain files anyone can inspect, and other programs (a sidecar, a script,
// an operator with a text editor) can drop events into it.
//
// Activate it with a blank import and open it through the feed registry with
// feed.SourceConfig.FileDir set, or call NewSource and NewSink directly.
//
// # On-disk format
//
// The feed is one flat directory. Every regular file whose name ends in
// ".json" holds exactly one event in the controlevent wire format (one JSON
// object, snake_case fields, at most controlevent.MaxEncodedSize bytes; a
// trailing newline is allowed). The event's control_version field is its
// position in the feed; the file name carries no meaning for readers. Files
// whose names do not end in ".json" are ignored by readers.
//
// The Sink names its files after the ControlVersion only, zero-padded to 20
// digits so that names sort in feed order: "00000000000000000042.json". The
// EventID never reaches a file name, so no EventID can make the Sink write
// outside the directory.
//
// Other names in the directory:
//
//   - ".lock": an empty file; writers hold an exclusive flock(2) on it while
//     they choose a ControlVersion and write the event.
//   - ".tmp-*": a Sink's temporary file, renamed to its final ".json" name once
//     complete and synced. A temporary file present while nobody holds the
//     lock is left over from a crash; a Sink removes such files when it opens.
//
// # Writing from other programs
//
// A program other than this package may add events if it follows the same
// protocol: take an exclusive flock on ".lock", read the highest
// control_version in the directory, write the event with control_version =
// highest + 1 to a temporary file whose name does not end in ".json", fsync
// it, rename it to a name ending in ".json" (any name; "%020d.json" is
// recommended), fsync the directory, then release the lock. Writing the final
// name in place (without a rename) works too, but readers may see a partial
// file and fail a Poll until the write completes.
//
// ControlVersions are expected to be dense from 1 (the Sink never leaves a
// gap). Deleting the oldest files is how a file feed is pruned: a Source asked
// for events after a cursor older than the oldest remaining file reports a
// *feed.CursorBehindError.
//
// # Delivery semantics
//
// The Sink assigns ControlVersions 1, 2, 3, ... with no gaps, counting files
// written by other programs. It is idempotent on EventID for as long as the
// file holding the EventID exists: a retry, from this process or another, and
// after a restart, returns the ControlVersion already recorded. Writes are
// atomic and durable: a file is either absent or complete, and Append returns
// only after the file and the directory entry are synced.
//
// The Source returns every event in the directory with ControlVersion greater
// than the cursor, ascending, at most Options.MaxBatch per Poll. Two files
// with the same control_version and the same event_id are one event; with
// different event_ids they are an error. The Source does not implement
// feed.Acker: it has no broker-side cursor. It implements feed.Waiter and
// feed.HeadReporter.
//
// # Cost
//
// On Linux both Source and Sink watch the directory with inotify, registered
// before an initial scan, and keep an in-memory index of the directory. A Poll
// or an Append reads only the files that changed since the previous call, so
// its cost grows with the number of new events, not with the history. When
// the kernel's event queue overflows, the index is rebuilt by a full scan.
// Elsewhere, or if inotify is unavailable, each call lists the directory and
// parses only the files whose name, size or modification time changed.
//
// # Errors
//
// A ".json" file that is not a single valid event (controlevent.Decode then
// Event.Validate), or two files that claim the same ControlVersion for
// different events, fail every Poll with an error naming the file until the
// file is fixed or removed; the Sink refuses to append while it cannot read
// every file, since it could not choose the next ControlVersion safely.
// Parse failures wrap controlevent.ErrInvalid. Operations after Close return
// errors wrapping feed.ErrClosed. Nothing is retried internally.
//
// The package requires a Unix system (flock(2)).
package filesource

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/controlfeed/controlfeed/feed"
)

// Name is the name this backend is registered under, for both Source and Sink.
const Name = "file"

// DefaultMaxBatch is the default bound on the number of events one Poll returns.
const DefaultMaxBatch = 1024

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
}

// Validate reports whether o holds acceptable values. A nil o is valid.
func (o *Options) Validate() error {
	if o == nil {
		return nil
	}
	if o.MaxBatch < 0 {
		return fmt.Errorf("filesource: options: MaxBatch is %d; it must be >= 0 (0 selects %d)", o.MaxBatch, DefaultMaxBatch)
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
}

var errEmptyDir = errors.New("directory is empty (set feed.SourceConfig.FileDir)")
