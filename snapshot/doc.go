// Package snapshot copies a node's SQLite database into the artifact store
// and restores such a copy into place, so that a node can join or recover in
// time proportional to its state rather than to the feed's history.
//
// A snapshot is two artifacts: the database file, stored whole under its
// content address, and a small JSON Manifest naming it (Manifest.Database)
// together with the format version, the schema versions of controlfeed's
// tables, the cursor (ControlVersion) the copy covers, its number of
// applied events, the source node and the time it was taken. The manifest's
// reference identifies the snapshot.
//
// # Consistency
//
// Create copies the database with SQLite's VACUUM INTO, inside one read
// transaction, while the node keeps applying: the copy holds every table
// (the application's, controlfeed_cursor, controlfeed_applied_events) as of
// one commit. The manifest's cursor and counts are read from the copy, never
// from the live database, so they describe exactly what is in it. A node
// restored from a snapshot resumes polling after Manifest.ControlVersion;
// its controlfeed_applied_events still guards against redelivered events.
//
// # Crash safety and retries
//
// Create changes nothing in the node's database and stores the database
// before the manifest, so a manifest never names a missing database; a
// retry is always safe. Restore writes the new database beside the target
// (target+TempSuffix), verifies it, checkpoints and removes the old
// database's WAL files and renames the new file into place; the exact
// sequence and why a crash at any point leaves either the complete old
// database or the complete new one are on Restore. The failure points
// snapshot.restore-mid-write, snapshot.restore-before-rename and
// snapshot.restore-after-rename (package internal/failpoint) sit on that
// path, and the tests kill a process at each.
//
// # Compatibility
//
// Restore refuses, with an *IncompatibleError (errors.Is ErrIncompatible),
// a manifest of another kind or format, or one recording a schema version
// newer than this program's (SupportedSchemas); older schema versions are
// accepted and upgraded by the node's Migrate calls. A database that does
// not match its manifest (size, sha256, SQLite's quick_check, tables,
// schema versions, cursor) is refused with ErrCorrupt. A populated target
// (applied events or a cursor above 0) is replaced only with
// RestoreOptions.Force (ErrPopulated otherwise), and a snapshot older than
// the target's cursor is a downgrade (ErrDowngrade, also only with Force).
//
// # Signatures
//
// The manifest records the trust chain head of the copy's cursor row
// (Manifest.Chain, absent when zero). With CreateOptions.SigningKey the
// manifest is stored as a DSSE envelope (trust.ManifestPayloadType) over
// its JSON; Decode reads both forms. With RestoreOptions.TrustedKeys,
// Restore verifies the signature before it fetches the database
// (Manifest.Verify) and compares the downloaded database's chain head with
// the signed one before it touches the target; every refusal is a
// *SignatureError (ErrUntrusted). docs/SECURITY.md has the format and the
// threat model.
//
// # Concurrency
//
// Create may run concurrently with the node's applier and with other
// Creates. Restore requires that no process has the target open: stop the
// node first. Restore detects a connection that keeps the old WAL busy
// (ErrInUse) but cannot detect every other user.
//
// # Publishing, and how a snapshot relates to the feed
//
// A snapshot is a recorded position in the feed, not a feed event: it holds
// the effect of every event up to Manifest.ControlVersion and of none
// after, and publishing it appends nothing to the feed, so the feed's
// positions, its gap rules and its dedup window are untouched. A node
// restored from it polls the feed after that position; if the feed no
// longer holds the event right after it (retention), the snapshot is of no
// use to that node (Record.Covers).
//
// A Catalog records the published snapshots of one feed, as Records (the
// manifest's reference, its cursor and a few facts to choose by), so that a
// joining node finds the latest in O(1): Catalog.Latest. There is one
// catalog backend per feed backend, registered under the feed's name
// (RegisterCatalog, OpenCatalog), each living beside its feed: package
// snapshot/filecatalog ("file": FEED_DIR/.snapshots/latest.json, written
// atomically) and snapshot/natscatalog ("jetstream": the key "latest" of
// the key/value bucket <stream>_SNAPSHOTS, created by the producer only).
// The latest never moves backwards (ErrOlder). The conformance suite all
// backends run is package snapshot/catalogtest.
//
// # Memory
//
// Both directions stream (and report their progress through
// CreateOptions.Progress and RestoreOptions.Progress): SQLite copies through its page cache, the file is
// streamed into and out of the store through fixed buffers, and no step
// holds the database in memory (see BenchmarkCreateRestore).
//
// # Errors
//
// Errors begin with "snapshot:", the operation and the path or reference
// involved, and wrap the sentinels above or the store's errors
// (artifact.ErrNotFound, artifact.ErrCorrupt).
package snapshot
