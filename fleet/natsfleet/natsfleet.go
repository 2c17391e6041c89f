// Package natsfleet is the fleet report store of the JetStream feed,
// registered as "jetstream" (the feed backend's name).
//
// # Layout
//
// A JetStream key/value bucket named after the feed's stream, BucketName
// ("CONTROLFEED_NODES" for the default stream CONTROLFEED), holds one key
// per node, the node's name, whose value is the node's latest JSON
// fleet.Report. The bucket keeps one revision per key. Entry.SeenAt is the
// server's time of the revision, so staleness does not depend on the
// nodes' clocks. List reads every key's latest value through one ordered
// (ephemeral) consumer: one round trip for the fleet, not one per node.
//
// # Who creates the bucket
//
// As for the feed stream, the artifact bucket and the snapshot catalog,
// only the producer creates it (fleet.Config.Create, set by "controlfeed
// serve --feed-sink jetstream"), with the feed's replicas, and it refuses
// an existing bucket with another replica count (a *ReplicasError naming
// the nats command that fixes it). Nodes and "controlfeed fleet" only open
// it; while it does not exist their calls fail with fleet.ErrNoStore (a
// node's reporter retries).
//
// # Forget
//
// Forget removes the node's durable consumer on the feed stream
// (natsfeed.DurableName of the node name), so the stream stops retaining
// messages for it, and Delete purges its key.
package natsfleet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/fleet"
	"github.com/controlfeed/controlfeed/internal/natsconn"
)

// Name is the store's registered name, the JetStream feed's.
const Name = "jetstream"

func init() {
	fleet.Register(Name, func(ctx context.Context, cfg fleet.Config) (fleet.Store, error) {
		return New(ctx, cfg, nil)
	})
}

// BucketName returns the report bucket of the feed stream stream ("" is
// natsfeed.DefaultStream).
func BucketName(stream string) string {
	if stream == "" {
		stream = natsfeed.DefaultStream
	}
	return stream + "_NODES"
}

// ReplicasError is returned by New with Create when the existing bucket
// has another replica count than the configured one.
type ReplicasError struct {
	Bucket     string
	Have, Want int
}

// Error names the counts and both remedies.
func (e *ReplicasError) Error() string {
	return fmt.Sprintf("natsfleet: existing node report bucket %q has %d replica(s) but %d are configured (--nats-replicas %d); "+
		"the producer does not change it: change it with `nats stream edit KV_%s --replicas %d`, or configure --nats-replicas %d to use it as it is",
		e.Bucket, e.Have, e.Want, e.Want, e.Bucket, e.Want, e.Have)
}

// Options are programmatic settings; nil selects the defaults.
type Options struct {
	// Conn is an existing connection to use (not closed by Close); nil
	// dials feed.NATSConfig.URLs.
	Conn *nats.Conn
}

// Store is the JetStream feed's report store. Safe for concurrent use.
type Store struct {
	nc      *nats.Conn
	own     bool
	js      jetstream.JetStream
	bucket  string
	stream  string
	timeout time.Duration
	kv      jetstream.KeyValue // nil until the bucket is found
}

var (
	_ fleet.Store     = (*Store)(nil)
	_ fleet.Forgetter = (*Store)(nil)
)

// New connects and opens (with cfg.Create: creates or checks) the bucket.
// Without Create a missing bucket is not an error here: the calls fail
// with fleet.ErrNoStore until the producer has created it.
func New(ctx context.Context, cfg fleet.Config, opts *Options) (*Store, error) {
	n := cfg.Feed.NATS
	s := &Store{bucket: BucketName(n.Stream), stream: n.Stream, timeout: n.RequestTimeout}
	if s.stream == "" {
		s.stream = natsfeed.DefaultStream
	}
	if s.timeout <= 0 {
		s.timeout = natsfeed.DefaultRequestTimeout
	}
	replicas := n.Replicas
	if replicas == 0 {
		replicas = natsfeed.DefaultReplicas
	}
	if opts != nil && opts.Conn != nil {
		s.nc = opts.Conn
	} else {
		urls := n.URLs
		if len(urls) == 0 {
			urls = []string{nats.DefaultURL}
		}
		auth := natsconn.Auth{CredsFile: n.CredsFile, User: n.User, Password: n.Password,
			TLSCAFile: n.TLSCAFile, TLSCertFile: n.TLSCertFile, TLSKeyFile: n.TLSKeyFile}
		nc, err := natsconn.Connect("natsfleet", urls, auth,
			natsconn.Options("controlfeed-fleet", 500*time.Millisecond, auth, nats.Timeout(s.timeout))...)
		if err != nil {
			return nil, err
		}
		s.nc, s.own = nc, true
	}
	js, err := jetstream.New(s.nc, jetstream.WithDefaultTimeout(s.timeout))
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("natsfleet: jetstream: %w", err)
	}
	s.js = js
	if err := s.open(ctx, cfg.Create, replicas); err != nil && !(errors.Is(err, fleet.ErrNoStore) && !cfg.Create) {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) open(ctx context.Context, create bool, replicas int) error {
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	err := s.lookup(rctx)
	if err == nil && create {
		return s.check(rctx, replicas)
	}
	if err == nil || !create || !errors.Is(err, fleet.ErrNoStore) {
		return err
	}
	_, err = s.js.CreateKeyValue(rctx, jetstream.KeyValueConfig{
		Bucket:      s.bucket,
		Description: "controlfeed: one report per fleet node (key: node name)",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil && !errors.Is(err, jetstream.ErrBucketExists) && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("natsfleet: create bucket %q (replicas %d): %w", s.bucket, replicas, err)
	}
	if err := s.lookup(rctx); err != nil {
		return err
	}
	return s.check(rctx, replicas)
}

func (s *Store) lookup(ctx context.Context) error {
	kv, err := s.js.KeyValue(ctx, s.bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("natsfleet: bucket %q: %w; the producer (serve --feed-sink jetstream) creates it with its --nats-replicas", s.bucket, fleet.ErrNoStore)
	}
	if err != nil {
		return fmt.Errorf("natsfleet: bucket %q: %w", s.bucket, err)
	}
	s.kv = kv
	return nil
}

func (s *Store) check(ctx context.Context, replicas int) error {
	st, err := s.js.Stream(ctx, "KV_"+s.bucket)
	if err != nil {
		return fmt.Errorf("natsfleet: bucket %q: stream: %w", s.bucket, err)
	}
	if have := st.CachedInfo().Config.Replicas; have != replicas {
		return &ReplicasError{Bucket: s.bucket, Have: have, Want: replicas}
	}
	return nil
}

// ready returns the bucket, looking it up again while it is missing.
func (s *Store) ready(ctx context.Context) (jetstream.KeyValue, error) {
	if s.kv != nil {
		return s.kv, nil
	}
	if err := s.lookup(ctx); err != nil {
		return nil, err
	}
	return s.kv, nil
}

// Name returns "jetstream".
func (s *Store) Name() string { return Name }

// Bucket returns the bucket's name.
func (s *Store) Bucket() string { return s.bucket }

// Put sets the node's key.
func (s *Store) Put(ctx context.Context, r fleet.Report) error {
	b, err := fleet.Encode(r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	kv, err := s.ready(ctx)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, r.Node, b); err != nil {
		return fmt.Errorf("natsfleet: put report of %q in bucket %q: %w", r.Node, s.bucket, err)
	}
	return nil
}

// List reads every key's latest value with one ordered consumer.
func (s *Store) List(ctx context.Context) ([]fleet.Entry, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	kv, err := s.ready(ctx)
	if err != nil {
		return nil, err
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("natsfleet: list bucket %q: %w", s.bucket, err)
	}
	defer w.Stop()
	var out []fleet.Entry
	var errs []error
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("natsfleet: list bucket %q: %w", s.bucket, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("natsfleet: list bucket %q: watcher stopped", s.bucket)
			}
			if e == nil { // the initial values are all delivered
				sortEntries(out)
				return out, errors.Join(errs...)
			}
			ent, err := s.decode(e)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			out = append(out, ent)
		}
	}
}

func (s *Store) decode(e jetstream.KeyValueEntry) (fleet.Entry, error) {
	r, err := fleet.Decode(e.Value())
	if err != nil {
		return fleet.Entry{}, fmt.Errorf("natsfleet: bucket %q key %q revision %d: %w", s.bucket, e.Key(), e.Revision(), err)
	}
	if r.Node != e.Key() {
		return fleet.Entry{}, fmt.Errorf("natsfleet: bucket %q key %q holds the report of node %q: %w", s.bucket, e.Key(), r.Node, fleet.ErrInvalidReport)
	}
	return fleet.Entry{Report: r, SeenAt: e.Created().UTC()}, nil
}

func sortEntries(es []fleet.Entry) {
	slices.SortFunc(es, func(a, b fleet.Entry) int { return strings.Compare(a.Report.Node, b.Report.Node) })
}

// Get reads one node's key.
func (s *Store) Get(ctx context.Context, node string) (fleet.Entry, error) {
	if err := fleet.ValidateNodeName(node); err != nil {
		return fleet.Entry{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	kv, err := s.ready(ctx)
	if err != nil {
		return fleet.Entry{}, err
	}
	e, err := kv.Get(ctx, node)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return fleet.Entry{}, fmt.Errorf("natsfleet: bucket %q key %q: %w", s.bucket, node, fleet.ErrNotFound)
	}
	if err != nil {
		return fleet.Entry{}, fmt.Errorf("natsfleet: get %q from bucket %q: %w", node, s.bucket, err)
	}
	return s.decode(e)
}

// Delete purges the node's key.
func (s *Store) Delete(ctx context.Context, node string) error {
	if _, err := s.Get(ctx, node); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.kv.Purge(ctx, node); err != nil {
		return fmt.Errorf("natsfleet: purge %q from bucket %q: %w", node, s.bucket, err)
	}
	return nil
}

// Forget deletes the node's durable consumer on the feed stream; nil if it
// has none.
func (s *Store) Forget(ctx context.Context, node string) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	durable := natsfeed.DurableName(node)
	err := s.js.DeleteConsumer(ctx, s.stream, durable)
	if err == nil || errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	return fmt.Errorf("natsfleet: delete durable consumer %q of node %q on stream %q: %w", durable, node, s.stream, err)
}

// Close closes the connection if New dialed it.
func (s *Store) Close() error {
	if s.own && s.nc != nil {
		s.nc.Close()
	}
	return nil
}
