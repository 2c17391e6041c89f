// Package failpoint holds controlfeed's compiled-in failure points: named
// places in the pipeline where a crash test can make the process die, panic,
// stall, or see an error, to prove that every step is crash-safe. It is in
// the spirit of etcd's gofail and FreeBSD's fail points, but tiny: a point is
// one call,
//
//	if err := failpoint.Inject(failpoint.KVAfterCommit); err != nil {
//		return fmt.Errorf("kv: put %q: %w", key, err)
//	}
//
// and nothing is generated or rewritten at build time.
//
// # Cost when off
//
// Inject is inlined into its caller; when no point is enabled it is one
// atomic pointer load and a nil check (about a nanosecond, see
// BenchmarkInjectDisabled) and returns nil. Production builds carry the
// points but never enable them.
//
// # Points
//
// The names are constants in this package (names.go); Names lists them and
// Enable rejects any other name.
//
//   - kv.after-artifact-before-commit: kv.Put has stored the value in the
//     artifact store and written the row and the outbox event, but its
//     transaction has not committed. A kill here must leave no row and no
//     outbox event, only a harmless unreferenced artifact.
//   - kv.after-commit: kv.Put or kv.Delete committed and has not returned:
//     the producer died between its own commit and the pump. The pump must
//     still publish the event. An error here is a lost reply: the change is
//     committed but the caller sees a failure.
//   - outbox.before-publish: the pump read a pending row and is about to hand
//     it to the Sink (Append, or AppendBatch for a window). An error is a
//     failed publish of that row: it stays pending with its bookkeeping.
//   - outbox.after-sync: the pump read the rows of a pass and made them
//     durable (fsync of the WAL), and has published none of them. With the
//     image(path) action the pump writes there a copy of the producer
//     database (VACUUM INTO, renamed into place): a state a power loss at
//     this instant could leave, since everything the pump will publish next
//     is in it. The chaos suite restores it under a killed producer.
//   - outbox.after-publish-before-writeback: the Sink acknowledged a row or a
//     batch and the pump has not committed the write-back of its
//     ControlVersion. The rows stay pending and are republished with the same
//     EventID; the Sink's dedup must give back the original ControlVersion.
//     An error skips the whole write-back of that chunk.
//   - applier.mid-batch: inside a catch-up apply transaction (several
//     events), after one event's savepoint was released, before commit. A
//     kill must lose the whole batch, nothing partial; an error fails the
//     transaction as a whole (unavailable, retried).
//   - applier.before-commit: the apply transaction is complete and about to
//     commit. An error (typically enospc) is a failed commit: the batch is
//     rolled back, the node reports itself unavailable (not halted: nothing
//     is stored against the event, and nothing can be skipped), retries, and
//     resumes by itself once the point is disabled.
//   - applier.after-commit-before-ack: the apply transaction committed and
//     the Source has not been acknowledged. A kill means the events are
//     redelivered and must be no-ops; an error skips the acks of that round
//     (the Source redelivers, as after a failed Ack).
//   - filestore.mid-write: the artifact file store wrote the first chunk of
//     a Put's temp file and has neither fsynced nor renamed it. A kill must
//     leave no object under the ref, only a temp file that a later Sweep
//     removes; an error fails the Put and removes the temp file.
//   - snapshot.restore-mid-write: snapshot.Restore has written the first
//     chunk of the downloaded database to its temporary file beside the
//     target. A kill must leave the old target as it was (a leftover
//     "<target>.restore" that the next Restore removes); an error fails the
//     Restore and removes the temporary file.
//   - snapshot.restore-before-rename: the new database is complete,
//     verified and fsynced beside the target, the old target's WAL was
//     checkpointed into it and its -wal/-shm removed, and the rename has not
//     happened. A kill must leave the complete old database; an error fails
//     the Restore with the old database in place.
//   - snapshot.restore-after-rename: the new database was renamed over the
//     target and the directory fsynced. A kill must leave the complete new
//     database; an error is a lost reply (the restore is done, the caller
//     sees a failure; running Restore again is safe).
//   - snapshot.create-after-copy: snapshot.Create's VACUUM INTO copy of the
//     live database is complete in its temporary directory; nothing is
//     stored. A kill must leave the node database valid and unchanged and
//     nothing in the store or the catalog (a leftover temporary directory);
//     an error fails Create and removes the directory.
//   - snapshot.create-mid-store: Create has fed the first chunk of the copy
//     to the artifact store's Put. A kill must leave no object under the
//     copy's ref; an error fails the Put and Create.
//   - snapshot.create-before-manifest: the database copy is stored, its
//     manifest is not. A kill or an error leaves an unreferenced artifact
//     and no manifest.
//   - snapshot.publish-before-catalog: the periodic snapshotter's Create
//     returned (manifest stored) and the catalog is not yet written. A kill
//     must leave the catalog's previous latest (or none); an error is
//     retried by the next attempt.
//
// # Spec grammar
//
// A spec enables points and says what each does when reached:
//
//	spec   = term { "," term }
//	term   = name "=" [ count "*" ] [ pct "%" ] action
//	action = "panic" | "exit" | "kill" | "error" | "enospc" | "sleep(" duration ")" | "image(" path ")" | "off"
//
// panic panics with an error wrapping ErrInjected. exit and kill (synonyms)
// send SIGKILL to the process itself, a real kill -9: no deferred call, no
// buffered write and no SQLite rollback runs, and Inject never returns.
// error returns an error wrapping ErrInjected; enospc one wrapping both
// ErrInjected and syscall.ENOSPC. sleep(d) sleeps for d (a time.Duration
// such as 100ms) and returns nil. image(path) is for the points whose
// caller asks ImagePath (Inject ignores it): the caller writes there, each
// time the point fires, an image of its state as a power loss at that
// instant could leave it on disk, and a harness restores the last image to
// simulate the power loss (outbox.after-sync). off does nothing. "N*" fires the action
// only the first N times (N >= 1); "P%" fires it with probability P/100 at
// each hit (0 < P <= 100); with both, the action fires at most N times, each
// hit with probability P/100. Spaces around terms are ignored; an empty spec
// disables everything. Examples:
//
//	applier.before-commit=enospc
//	outbox.after-publish-before-writeback=1*error,filestore.mid-write=25%kill
//	kv.after-commit=sleep(100ms)
//
// # Enabling
//
// At program start (package init) the package reads the environment variable
// CONTROLFEED_FAILPOINTS once and enables that spec; an invalid spec panics
// at init, so a crash harness never silently runs without its faults. This
// is the one place a controlfeed library reads the environment: failure
// points are test infrastructure of the daemon, and the crash harness drives
// a real, unmodified binary. Tests in-process use Enable and Disable
// instead; they replace the whole set of enabled points atomically and are
// safe to call while other goroutines run Inject.
//
// # Kill log
//
// When a panic, exit or kill action fires, the package first appends one
// line "<name>\n" to the file named by CONTROLFEED_FAILPOINT_LOG (read once
// at init; SetLogFile changes it), opened with O_APPEND and fsynced, so a
// harness can count deaths per point across many processes. Failures to
// write the log are ignored: the process is about to die.
//
// # Errors
//
// Enable's errors begin with "failpoint: enable" and name the offending
// term; an unknown point name lists the known names. Injected errors read
// `failpoint: "<name>": injected failure` and wrap ErrInjected (and
// syscall.ENOSPC for enospc).
package failpoint
