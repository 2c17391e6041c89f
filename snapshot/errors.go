package snapshot

import (
	"errors"
	"fmt"
)

var (
	// ErrIncompatible is wrapped (through *IncompatibleError) when a
	// snapshot is not one this program can restore: not a snapshot
	// manifest, a newer format, or a schema version newer than this
	// program's. Retrying does not help; upgrade the program or pick
	// another snapshot.
	ErrIncompatible = errors.New("incompatible snapshot")
	// ErrCorrupt is wrapped when a snapshot's database does not match its
	// manifest: wrong size or sha256, a failed SQLite check, controlfeed's
	// tables missing, or a cursor, schema version or applied-event count
	// other than the manifest says. Errors coming from the artifact store's
	// own verification also wrap artifact.ErrCorrupt. The target is left
	// untouched.
	ErrCorrupt = errors.New("snapshot corrupt")
	// ErrPopulated is wrapped when Restore refuses to replace a target
	// database that holds state (applied events, a cursor above 0, tables
	// of its own, a producer's role, outbox or key/value rows, or content
	// that is not a readable SQLite database) without RestoreOptions.Force.
	ErrPopulated = errors.New("target database is populated")
	// ErrDowngrade is wrapped when Restore refuses a snapshot whose cursor
	// is below the target database's cursor without RestoreOptions.Force.
	ErrDowngrade = errors.New("snapshot is older than the target database")
	// ErrInUse is wrapped when Restore finds the target database held by
	// another connection (its write-ahead log cannot be checkpointed).
	// Stop the process using it and retry.
	ErrInUse = errors.New("target database in use")
	// ErrNotNode is wrapped when Create is given a database without the
	// applier's tables (controlfeed_cursor, controlfeed_applied_events).
	ErrNotNode = errors.New("not a node database")
)

// IncompatibleError describes why a snapshot cannot be restored by this
// program. errors.Is(err, ErrIncompatible) reports true for it.
type IncompatibleError struct {
	// Manifest is the manifest's artifact reference, or "" if unknown.
	Manifest string
	// What names the incompatible property: "kind", "format" or
	// "schema <component>".
	What string
	// Got is the snapshot's value, Supported what this program accepts.
	Got, Supported string
	// Hint says what to do.
	Hint string
}

// Error implements error.
func (e *IncompatibleError) Error() string {
	m := ""
	if e.Manifest != "" {
		m = " " + e.Manifest
	}
	return fmt.Sprintf("snapshot: manifest%s: %s is %s, this program supports %s: %v; %s", m, e.What, e.Got, e.Supported, ErrIncompatible, e.Hint)
}

// Is reports whether target is ErrIncompatible.
func (e *IncompatibleError) Is(target error) bool { return target == ErrIncompatible }
