// Package natscatalog is the snapshot catalog of the JetStream feed,
// registered as "jetstream" (the feed backend's name).
//
// # Layout
//
// A JetStream key/value bucket named after the feed's stream, BucketName
// ("CONTROLFEED_SNAPSHOTS" for the default stream CONTROLFEED), holds one
// key, "latest", whose value is the JSON Record of the latest published
// snapshot. Latest is one KV get (a last-message-for-subject look-up on
// the bucket's stream): O(1) in the number of snapshots. The bucket keeps
// HistoryLength revisions of the key, which List returns.
//
// # Who creates the bucket
//
// As for the feed stream and the artifact bucket, only the producer
// creates it (snapshot.CatalogConfig.Create, set by "controlfeed serve
// --feed-sink jetstream"), with the feed's replicas, and it refuses an
// existing bucket with another replica count (a *ReplicasError naming the
// nats command that fixes it). Nodes and "controlfeed snapshot publish"
// only open it; while it does not exist their calls fail with
// snapshot.ErrNoCatalog.
//
// # Concurrency
//
// Publish is a compare-and-set on the key's revision (KV Update): of two
// concurrent publishers, the later one re-reads the latest and publishes
// only if it is not older, so the latest never moves backwards.
package natscatalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/internal/natsconn"
	"github.com/controlfeed/controlfeed/snapshot"
)

// Name is the catalog's registered name, the JetStream feed's.
const Name = "jetstream"

// HistoryLength is how many published records the bucket keeps (the KV
// maximum).
const HistoryLength = 64

// key is the bucket's only key.
const key = "latest"

func init() {
	snapshot.RegisterCatalog(Name, func(ctx context.Context, cfg snapshot.CatalogConfig) (snapshot.Catalog, error) {
		return New(ctx, cfg, nil)
	})
}

// BucketName returns the catalog bucket of the feed stream stream ("" is
// natsfeed.DefaultStream).
func BucketName(stream string) string {
	if stream == "" {
		stream = natsfeed.DefaultStream
	}
	return stream + "_SNAPSHOTS"
}

// ReplicasError is returned by New with Create when the existing bucket
// has another replica count than the configured one.
type ReplicasError struct {
	Bucket     string
	Have, Want int
}

// Error names the counts and both remedies.
func (e *ReplicasError) Error() string {
	return fmt.Sprintf("natscatalog: existing snapshot bucket %q has %d replica(s) but %d are configured (--nats-replicas %d); "+
		"the producer does not change it: change it with `nats stream edit KV_%s --replicas %d`, or configure --nats-replicas %d to use it as it is",
		e.Bucket, e.Have, e.Want, e.Want, e.Bucket, e.Want, e.Have)
}

// Options are programmatic settings; nil selects the defaults.
type Options struct {
	// Conn is an existing connection to use (not closed by Close); nil
	// dials feed.NATSConfig.URLs.
	Conn *nats.Conn
}

// Catalog is the JetStream feed's snapshot catalog. Safe for concurrent
// use.
type Catalog struct {
	nc      *nats.Conn
	own     bool
	js      jetstream.JetStream
	bucket  string
	timeout time.Duration
	kv      jetstream.KeyValue // nil until the bucket is found
}

var _ snapshot.Catalog = (*Catalog)(nil)

// New connects and opens (with cfg.Create: creates or checks) the bucket.
// Without Create a missing bucket is not an error here: the calls fail with
// snapshot.ErrNoCatalog until the producer has created it.
func New(ctx context.Context, cfg snapshot.CatalogConfig, opts *Options) (*Catalog, error) {
	n := cfg.Feed.NATS
	c := &Catalog{bucket: BucketName(n.Stream), timeout: n.RequestTimeout}
	if c.timeout <= 0 {
		c.timeout = natsfeed.DefaultRequestTimeout
	}
	replicas := n.Replicas
	if replicas == 0 {
		replicas = natsfeed.DefaultReplicas
	}
	if opts != nil && opts.Conn != nil {
		c.nc = opts.Conn
	} else {
		urls := n.URLs
		if len(urls) == 0 {
			urls = []string{nats.DefaultURL}
		}
		auth := natsconn.Auth{CredsFile: n.CredsFile, User: n.User, Password: n.Password,
			TLSCAFile: n.TLSCAFile, TLSCertFile: n.TLSCertFile, TLSKeyFile: n.TLSKeyFile}
		nc, err := natsconn.Connect("natscatalog", urls, auth,
			natsconn.Options("controlfeed-snapshots", 500*time.Millisecond, auth, nats.Timeout(c.timeout))...)
		if err != nil {
			return nil, err
		}
		c.nc, c.own = nc, true
	}
	js, err := jetstream.New(c.nc, jetstream.WithDefaultTimeout(c.timeout))
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("natscatalog: jetstream: %w", err)
	}
	c.js = js
	if err := c.open(ctx, cfg.Create, replicas); err != nil && !(errors.Is(err, snapshot.ErrNoCatalog) && !cfg.Create) {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Catalog) open(ctx context.Context, create bool, replicas int) error {
	rctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	err := c.lookup(rctx)
	if err == nil && create {
		return c.check(rctx, replicas)
	}
	if err == nil || !create || !errors.Is(err, snapshot.ErrNoCatalog) {
		return err
	}
	_, err = c.js.CreateKeyValue(rctx, jetstream.KeyValueConfig{
		Bucket:      c.bucket,
		Description: "controlfeed: the feed's published snapshots (key latest)",
		History:     HistoryLength,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil && !errors.Is(err, jetstream.ErrBucketExists) && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("natscatalog: create bucket %q (replicas %d): %w", c.bucket, replicas, err)
	}
	if err := c.lookup(rctx); err != nil {
		return err
	}
	return c.check(rctx, replicas)
}

func (c *Catalog) lookup(ctx context.Context) error {
	kv, err := c.js.KeyValue(ctx, c.bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("natscatalog: bucket %q: %w; the producer (serve --feed-sink jetstream) creates it with its --nats-replicas", c.bucket, snapshot.ErrNoCatalog)
	}
	if err != nil {
		return fmt.Errorf("natscatalog: bucket %q: %w", c.bucket, err)
	}
	c.kv = kv
	return nil
}

func (c *Catalog) check(ctx context.Context, replicas int) error {
	st, err := c.js.Stream(ctx, "KV_"+c.bucket)
	if err != nil {
		return fmt.Errorf("natscatalog: bucket %q: stream: %w", c.bucket, err)
	}
	if have := st.CachedInfo().Config.Replicas; have != replicas {
		return &ReplicasError{Bucket: c.bucket, Have: have, Want: replicas}
	}
	return nil
}

// ready returns the bucket, looking it up again while it is missing.
func (c *Catalog) ready(ctx context.Context) (jetstream.KeyValue, error) {
	if c.kv != nil {
		return c.kv, nil
	}
	if err := c.lookup(ctx); err != nil {
		return nil, err
	}
	return c.kv, nil
}

// Name returns "jetstream".
func (c *Catalog) Name() string { return Name }

// Bucket returns the bucket's name.
func (c *Catalog) Bucket() string { return c.bucket }

// Latest gets the key "latest".
func (c *Catalog) Latest(ctx context.Context) (snapshot.Record, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	kv, err := c.ready(ctx)
	if err != nil {
		return snapshot.Record{}, err
	}
	r, _, err := c.get(ctx, kv)
	return r, err
}

func (c *Catalog) get(ctx context.Context, kv jetstream.KeyValue) (snapshot.Record, uint64, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return snapshot.Record{}, 0, fmt.Errorf("natscatalog: bucket %q: %w (publish one with: controlfeed snapshot publish --db NODE.db --feed-source jetstream)", c.bucket, snapshot.ErrNoSnapshot)
	}
	if err != nil {
		return snapshot.Record{}, 0, fmt.Errorf("natscatalog: get latest from bucket %q: %w", c.bucket, err)
	}
	r, err := decode(e.Value(), c.bucket, e.Revision())
	return r, e.Revision(), err
}

func decode(b []byte, bucket string, rev uint64) (snapshot.Record, error) {
	var r snapshot.Record
	if err := json.Unmarshal(b, &r); err != nil {
		return snapshot.Record{}, fmt.Errorf("natscatalog: bucket %q revision %d: not a snapshot record: %w", bucket, rev, err)
	}
	if err := r.Validate(); err != nil {
		return snapshot.Record{}, fmt.Errorf("natscatalog: bucket %q revision %d: %w", bucket, rev, err)
	}
	return r, nil
}

// List returns the key's history, newest first.
func (c *Catalog) List(ctx context.Context) ([]snapshot.Record, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	kv, err := c.ready(ctx)
	if err != nil {
		return nil, err
	}
	es, err := kv.History(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("natscatalog: history of bucket %q: %w", c.bucket, err)
	}
	out := make([]snapshot.Record, 0, len(es))
	for _, e := range es {
		if e.Operation() != jetstream.KeyValuePut {
			continue
		}
		r, err := decode(e.Value(), c.bucket, e.Revision())
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	snapshot.SortRecords(out)
	return out, nil
}

// Publish compares and sets the key.
func (c *Catalog) Publish(ctx context.Context, r snapshot.Record) error {
	if err := r.Validate(); err != nil {
		return err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("natscatalog: publish %s: %w", r.Manifest, err)
	}
	for attempt := 0; ; attempt++ {
		if err := c.publishOnce(ctx, r, b); !errors.Is(err, errRaced) || attempt >= 10 {
			return err
		}
	}
}

var errRaced = errors.New("another publish came first")

func (c *Catalog) publishOnce(ctx context.Context, r snapshot.Record, b []byte) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	kv, err := c.ready(ctx)
	if err != nil {
		return err
	}
	latest, rev, err := c.get(ctx, kv)
	switch {
	case errors.Is(err, snapshot.ErrNoSnapshot):
		if _, err := kv.Create(ctx, key, b); errors.Is(err, jetstream.ErrKeyExists) {
			return errRaced
		} else if err != nil {
			return fmt.Errorf("natscatalog: publish %s to bucket %q: %w", r.Manifest, c.bucket, err)
		}
		return nil
	case err != nil:
		return err
	case latest.Manifest == r.Manifest:
		return nil
	}
	if err := snapshot.CheckNewer(latest, r); err != nil {
		return err
	}
	if _, err := kv.Update(ctx, key, b, rev); err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return errRaced
		}
		return fmt.Errorf("natscatalog: publish %s to bucket %q: %w", r.Manifest, c.bucket, err)
	}
	return nil
}

// Close closes the connection if New dialed it.
func (c *Catalog) Close() error {
	if c.own && c.nc != nil {
		c.nc.Close()
	}
	return nil
}

var _ snapshot.Forgetter = (*Catalog)(nil)

// Forget purges the key's revisions up to and including the newest one
// holding r from the bucket's stream (a KV stream refuses single message
// deletes): records published before r go with it, which Prune, the
// caller, forgets anyway (records are published in cursor order). It
// refuses the latest revision (snapshot.ErrLatest); a record not in the
// history is not an error.
func (c *Catalog) Forget(ctx context.Context, r snapshot.Record) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	kv, err := c.ready(ctx)
	if err != nil {
		return err
	}
	es, err := kv.History(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("natscatalog: forget %s: history of bucket %q: %w", r.Manifest, c.bucket, err)
	}
	var rev uint64
	for i, e := range es {
		if e.Operation() != jetstream.KeyValuePut {
			continue
		}
		got, err := decode(e.Value(), c.bucket, e.Revision())
		if err != nil || got.Manifest != r.Manifest {
			continue
		}
		if i == len(es)-1 {
			return fmt.Errorf("natscatalog: forget %s in bucket %q: %w", r.Manifest, c.bucket, snapshot.ErrLatest)
		}
		rev = e.Revision()
	}
	if rev == 0 {
		return nil
	}
	st, err := c.js.Stream(ctx, "KV_"+c.bucket)
	if err != nil {
		return fmt.Errorf("natscatalog: forget %s: stream of bucket %q: %w", r.Manifest, c.bucket, err)
	}
	subject := "$KV." + c.bucket + "." + key
	if err := st.Purge(ctx, jetstream.WithPurgeSubject(subject), jetstream.WithPurgeSequence(rev+1)); err != nil {
		return fmt.Errorf("natscatalog: forget %s: purge revisions through %d of bucket %q: %w", r.Manifest, rev, c.bucket, err)
	}
	return nil
}
