package snapshot

import (
	"context"
	"errors"
	"fmt"

	"github.com/controlfeed/controlfeed/artifact"
)

// ErrLatest is wrapped by Forgetter.Forget when asked to forget the
// catalog's latest record, which is never removed: a joining node must
// always find it.
var ErrLatest = errors.New("the latest published snapshot is never removed")

// Forgetter is an optional interface a Catalog may implement to drop a
// record from its history (List no longer returns it); a backend may drop
// the records published before it too (the JetStream catalog purges the
// older revisions with it). Forget refuses the
// latest record with an error wrapping ErrLatest and changes nothing; a
// record the catalog does not hold is not an error, so a retry after a
// crash is safe. A catalog that does not implement it keeps its history
// (trimmed to its own length); Prune then removes nothing.
type Forgetter interface {
	Forget(ctx context.Context, r Record) error
}

// PruneResult is what Prune did.
type PruneResult struct {
	// Forgotten are the records removed from the catalog, newest first.
	Forgotten []Record
	// DeletedArtifacts counts the artifacts (manifests and database
	// copies) deleted from the store.
	DeletedArtifacts int
	// KeptArtifacts is set when the store cannot delete (it implements no
	// artifact.Deleter): the forgotten snapshots' artifacts stay in it.
	KeptArtifacts bool
}

// Prune garbage-collects the catalog's old snapshots: it keeps the newest
// keep records of cat's history (at least 1, and always the latest) and,
// for each older one, first removes it from the catalog (Forgetter) and
// then deletes its manifest and database artifacts from store (if store
// implements artifact.Deleter), except an artifact a kept snapshot also
// names (a database copy of an unchanged node has the same address).
//
// Order and crashes: a record is forgotten before its artifacts are
// deleted, so a joining node that reads the catalog never picks a snapshot
// whose artifacts are gone; a crash in between leaves unreferenced
// artifacts, harmless and not collected later. A node restoring an old
// snapshot by reference (snapshot restore --ref) while it is pruned fails
// with a not-found error and can retry with the latest. The store is
// shared with the feed's event payloads: only artifacts named by a
// forgotten manifest are deleted.
//
// A catalog without Forgetter makes Prune a no-op (zero result, nil).
// Prune is safe to run from several processes at once (each deletion is
// idempotent).
func Prune(ctx context.Context, cat Catalog, store artifact.Store, keep int) (PruneResult, error) {
	var res PruneResult
	f, ok := cat.(Forgetter)
	if !ok {
		return res, nil
	}
	keep = max(keep, 1)
	recs, err := cat.List(ctx)
	if err != nil {
		return res, fmt.Errorf("snapshot: prune: list %s catalog: %w", cat.Name(), err)
	}
	latest, err := cat.Latest(ctx)
	if errors.Is(err, ErrNoSnapshot) {
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("snapshot: prune: latest of %s catalog: %w", cat.Name(), err)
	}
	if len(recs) <= keep {
		return res, nil
	}
	// Artifacts the kept snapshots name must stay.
	inUse := map[string]bool{latest.Manifest: true}
	kept := append([]Record{latest}, recs[:keep]...)
	for _, r := range kept {
		inUse[r.Manifest] = true
		if m, err := Load(ctx, store, r.Manifest); err == nil {
			inUse[m.Database.Ref] = true
		} else if !errors.Is(err, artifact.ErrNotFound) {
			return res, fmt.Errorf("snapshot: prune: kept snapshot %s: %w", r.Manifest, err)
		}
	}
	del, canDelete := store.(artifact.Deleter)
	res.KeptArtifacts = !canDelete
	for _, r := range recs[keep:] {
		if r.Manifest == latest.Manifest {
			continue
		}
		var dbRef string
		if m, err := Load(ctx, store, r.Manifest); err == nil {
			dbRef = m.Database.Ref
		} else if !errors.Is(err, artifact.ErrNotFound) {
			return res, fmt.Errorf("snapshot: prune: snapshot %s: %w", r.Manifest, err)
		}
		if err := f.Forget(ctx, r); err != nil {
			if errors.Is(err, ErrLatest) {
				continue // published meanwhile as the latest again
			}
			return res, fmt.Errorf("snapshot: prune: %w", err)
		}
		res.Forgotten = append(res.Forgotten, r)
		if !canDelete {
			continue
		}
		for _, ref := range []string{r.Manifest, dbRef} {
			if ref == "" || inUse[ref] {
				continue
			}
			if err := del.Delete(ctx, ref); err != nil {
				return res, fmt.Errorf("snapshot: prune: delete artifact %s of snapshot %s: %w", ref, r.Manifest, err)
			}
			inUse[ref] = true // deleted once
			res.DeletedArtifacts++
		}
	}
	return res, nil
}
