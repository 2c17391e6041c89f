package natsobject

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrNoBucket is wrapped by Get and Put of a Store opened without
// artifact.NATSConfig.Create (a node) while the bucket does not exist: the
// producer creates it, and until then the store is unavailable, which the
// applier retries. It never means that an artifact is missing
// (artifact.ErrNotFound).
var ErrNoBucket = errors.New("natsobject: the artifact bucket does not exist yet")

// ReplicasError is returned by New with artifact.NATSConfig.Create (the
// producer) when the existing bucket has a replica count other than the
// configured one. The producer never changes an existing bucket: a node of
// an older release or an operator may have created it, and an R1 bucket on
// a cluster loses artifacts with one server. Either change the bucket's
// stream with the nats command Error names, or configure the bucket's
// actual count to accept it.
type ReplicasError struct {
	// Bucket is the bucket name, Stream its JetStream stream (OBJ_<bucket>).
	Bucket, Stream string
	// Have is the existing count, Want the configured one.
	Have, Want int
}

// Error names the counts and both remedies.
func (e *ReplicasError) Error() string {
	return fmt.Sprintf("natsobject: existing bucket %q has %d replica(s) but %d are configured (--nats-replicas %d); "+
		"the producer does not change it: change it with `nats stream edit %s --replicas %d`, "+
		"or configure --nats-replicas %d to use it as it is",
		e.Bucket, e.Have, e.Want, e.Want, e.Stream, e.Want, e.Have)
}

// openBucket is New's part: look the bucket up (never a create request
// first); with Create, check an existing bucket or create a missing one;
// without, leave a missing bucket to ready.
func (s *Store) openBucket(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	err := s.lookup(rctx)
	switch {
	case err == nil && s.cfg.Create:
		return s.check()
	case err == nil:
		return nil
	case !errors.Is(err, ErrNoBucket):
		return err
	case !s.cfg.Create:
		s.opts.Logger.Warn("natsobject: the artifact bucket does not exist yet; the producer creates it, and this store waits for it (fetches fail as unavailable until then); if the producer runs already, check that --nats-bucket names its bucket",
			"bucket", s.bucket)
		return nil
	}
	_, err = s.js.CreateObjectStore(rctx, jetstream.ObjectStoreConfig{
		Bucket:      s.bucket,
		Description: "controlfeed artifacts, named by sha256 reference",
		Storage:     jetstream.FileStorage,
		Replicas:    s.cfg.Replicas,
	})
	if err != nil && !errors.Is(err, jetstream.ErrBucketExists) && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("natsobject: create bucket %q (replicas %d): %w", s.bucket, s.cfg.Replicas, err)
	}
	if err == nil {
		s.opts.Logger.Info("natsobject: created the artifact bucket", "bucket", s.bucket, "replicas", s.cfg.Replicas)
	}
	if err := s.lookup(rctx); err != nil { // created, possibly concurrently: check it
		return err
	}
	return s.check()
}

// lookup opens the existing bucket and its stream, setting s.obs and
// s.stream, or fails with an error wrapping ErrNoBucket.
func (s *Store) lookup(ctx context.Context) error {
	obs, err := s.js.ObjectStore(ctx, s.bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("natsobject: bucket %q: %w; the producer (kv put, or serve with a feed sink) creates it with its --nats-replicas; if the producer runs already, check that --nats-bucket names the producer's bucket", s.bucket, ErrNoBucket)
	}
	if err != nil {
		return fmt.Errorf("natsobject: bucket %q: look it up (%s): %w", s.bucket, s.brokerState(), err)
	}
	stream, err := s.js.Stream(ctx, streamName(s.bucket))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("natsobject: bucket %q: %w; the producer (kv put, or serve with a feed sink) creates it with its --nats-replicas; if the producer runs already, check that --nats-bucket names the producer's bucket", s.bucket, ErrNoBucket)
	}
	if err != nil {
		return fmt.Errorf("natsobject: bucket %q: stream %s (%s): %w", s.bucket, streamName(s.bucket), s.brokerState(), err)
	}
	s.openMu.Lock()
	s.obs, s.stream = obs, stream
	s.openMu.Unlock()
	return nil
}

// check refuses an existing bucket that is not what the producer is
// configured for: other replicas, or memory storage (artifacts must outlive
// a server restart).
func (s *Store) check() error {
	cfg := s.stream.CachedInfo().Config
	if cfg.Storage != jetstream.FileStorage {
		return fmt.Errorf("natsobject: existing bucket %q uses memory storage; artifacts must survive a server restart: recreate it with file storage or configure another bucket", s.bucket)
	}
	if cfg.Replicas != s.cfg.Replicas {
		return &ReplicasError{Bucket: s.bucket, Stream: streamName(s.bucket), Have: cfg.Replicas, Want: s.cfg.Replicas}
	}
	return nil
}

// ready makes sure the bucket is open, looking it up again while it is
// missing (a node started before the producer). Get and Put call it first.
func (s *Store) ready(ctx context.Context) error {
	s.openMu.Lock()
	open := s.obs != nil
	s.openMu.Unlock()
	if open {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	return s.lookup(rctx)
}
