package natsobject

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/artifact"
)

var _ artifact.Deleter = (*Store)(nil)

// Delete removes the object ref (its metadata and chunks) from the bucket;
// an absent object is not an error. It is serialised with this Store's
// Puts of the same ref, so a concurrent Put of the same bytes either ends
// before it (and its object is deleted) or after it (and stores it anew).
func (s *Store) Delete(ctx context.Context, ref string) error {
	if err := artifact.ParseRef(ref); err != nil {
		return fmt.Errorf("natsobject: delete: %w", err)
	}
	if s.isClosed() {
		return fmt.Errorf("natsobject: delete %s: %w", ref, ErrClosed)
	}
	if err := s.ready(ctx); err != nil {
		return fmt.Errorf("natsobject: delete %s: %w", ref, err)
	}
	unlock := s.lock(ref)
	defer unlock()
	rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	if err := s.obs.Delete(rctx, ref); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("natsobject: delete %s from bucket %q (%s): %w", ref, s.bucket, s.brokerState(), err)
	}
	return nil
}
