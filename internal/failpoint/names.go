package failpoint

// The failure points compiled into controlfeed. The package documentation
// says where each sits and what it simulates. Adding a point means adding a
// constant here and to known, and one Inject call at the spot.
const (
	// KVAfterArtifactBeforeCommit is in kv.Put: artifact stored, row and
	// outbox event written, transaction not committed.
	KVAfterArtifactBeforeCommit = "kv.after-artifact-before-commit"
	// KVAfterCommit is in kv.Put and kv.Delete: committed, not returned.
	KVAfterCommit = "kv.after-commit"
	// OutboxBeforePublish is in the outbox pump: row read, before the Sink.
	OutboxBeforePublish = "outbox.before-publish"
	// OutboxAfterSync is in the outbox pump: the rows of a pass were read
	// and made durable (fsync), none is published yet. Its image action
	// writes a copy of the producer database (see package outbox).
	OutboxAfterSync = "outbox.after-sync"
	// OutboxAfterPublishBeforeWriteback is in the outbox pump: the Sink
	// acknowledged, the write-back transaction has not committed.
	OutboxAfterPublishBeforeWriteback = "outbox.after-publish-before-writeback"
	// ApplierMidBatch is in the applier's catch-up transaction, after an
	// event's savepoint was released, before commit.
	ApplierMidBatch = "applier.mid-batch"
	// ApplierBeforeCommit is in the applier, just before the apply
	// transaction commits.
	ApplierBeforeCommit = "applier.before-commit"
	// ApplierAfterCommitBeforeAck is in the applier: committed, not acked.
	ApplierAfterCommitBeforeAck = "applier.after-commit-before-ack"
	// FilestoreMidWrite is in the artifact file store's Put: first chunk of
	// the temp file written, not fsynced, not renamed.
	FilestoreMidWrite = "filestore.mid-write"
	// SnapshotRestoreMidWrite is in snapshot.Restore: the first chunk of
	// the downloaded database is written to the temporary file beside the
	// target, not all of it, nothing fsynced or renamed.
	SnapshotRestoreMidWrite = "snapshot.restore-mid-write"
	// SnapshotRestoreBeforeRename is in snapshot.Restore: the new database
	// is complete, verified and fsynced beside the target, the old
	// target's WAL is checkpointed and its -wal/-shm removed, and the
	// rename has not happened.
	SnapshotRestoreBeforeRename = "snapshot.restore-before-rename"
	// SnapshotRestoreAfterRename is in snapshot.Restore: the new database
	// was renamed over the target and the directory fsynced; Restore has
	// not returned.
	SnapshotRestoreAfterRename = "snapshot.restore-after-rename"
	// SnapshotCreateAfterCopy is in snapshot.Create: the copy of the live
	// database is complete in the temporary directory, nothing stored.
	SnapshotCreateAfterCopy = "snapshot.create-after-copy"
	// SnapshotCreateMidStore is in snapshot.Create: the first chunk of the
	// copy was fed to the artifact store's Put.
	SnapshotCreateMidStore = "snapshot.create-mid-store"
	// SnapshotCreateBeforeManifest is in snapshot.Create: the database
	// copy is stored, its manifest is not.
	SnapshotCreateBeforeManifest = "snapshot.create-before-manifest"
	// SnapshotPublishBeforeCatalog is in the periodic snapshotter
	// (snapshot.Periodic): Create returned, the catalog is not written.
	SnapshotPublishBeforeCatalog = "snapshot.publish-before-catalog"
)

// known is the set Enable accepts; keep it in step with the constants.
var known = []string{
	KVAfterArtifactBeforeCommit,
	KVAfterCommit,
	OutboxBeforePublish,
	OutboxAfterSync,
	OutboxAfterPublishBeforeWriteback,
	ApplierMidBatch,
	ApplierBeforeCommit,
	ApplierAfterCommitBeforeAck,
	FilestoreMidWrite,
	SnapshotRestoreMidWrite,
	SnapshotRestoreBeforeRename,
	SnapshotRestoreAfterRename,
	SnapshotCreateAfterCopy,
	SnapshotCreateMidStore,
	SnapshotCreateBeforeManifest,
	SnapshotPublishBeforeCatalog,
}
