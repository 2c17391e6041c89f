package artifact

import "context"

// Deleter is an optional interface a Store may implement to remove an
// object. Only a caller that knows nothing references the object any more
// may delete it (the snapshot garbage collector removes the artifacts of
// the snapshots it drops from the catalog): the store is content-addressed,
// so every holder of the same bytes shares one object. Delete of an absent
// object is not an error (a retry after a crash is safe); a malformed ref
// wraps ErrBadRef. A store that does not implement Deleter keeps every
// object; callers then leave the objects in place and say so.
type Deleter interface {
	Delete(ctx context.Context, ref string) error
}
