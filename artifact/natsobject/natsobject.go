// Package natsobject is the NATS JetStream Object Store artifact backend,
// registered as "jetstream" on artifact.Config.NATS.
//
// Each artifact is one object of a bucket (default "controlfeed-artifacts"),
// named by its reference ("sha256:<hex>"). The Object Store splits objects
// into chunks (128 KiB) and streams them, so large payloads never sit in
// memory.
//
// # Configuration
//
// artifact.NATSConfig zero values select these defaults: URLs
// nats.DefaultURL; Bucket "controlfeed-artifacts"; Replicas 1 (use 3 on a
// cluster so artifacts survive the loss of a server).
//
// # Who creates the bucket
//
// Only the producer's store (artifact.NATSConfig.Create) creates the bucket,
// with file storage and Replicas, and only after looking it up: an existing
// bucket must be file-backed and have exactly Replicas replicas, else New
// fails (a *ReplicasError names the `nats stream edit` command that fixes
// the count) without sending any create request. A node's store never
// creates it: while it is missing, Get and Put fail with ErrNoBucket, an
// outage the applier retries, so a node started before the producer cannot
// leave an R1 bucket behind on a cluster.
// Options (the programmatic extras of New) choose the spool directory,
// timeouts and an existing connection.
//
// # Put: spool, then upload
//
// An object's name is its hash, known only once the whole content has been
// read, and the Object Store cannot rename. Put therefore spools the content
// to a temporary file in Options.SpoolDir while hashing it, then uploads the
// file under its reference unless the bucket already holds that object
// complete, and removes the file. The cost is local disk the size of the
// largest artifact and one extra local write/read; the gain is that the
// bucket only ever holds objects under their true reference. Only io.EOF
// ends the content: any other reader error, io.ErrUnexpectedEOF included,
// fails the Put before anything is uploaded.
//
// # What Put promises on failure and retry
//
// Put returns a reference only when the bucket holds the complete object
// under it. The Object Store writes an object's chunks first and its
// metadata last, and nats.go purges the chunks of an upload that fails, but
// the metadata may be stored already: a bucket at its byte limit (MaxBytes)
// or a server out of disk leaves a name whose chunks are gone. So an object
// already in the bucket counts only after it is checked: its metadata must
// give the content's size and a digest equal to the reference, and the
// stream must hold every chunk that metadata names (one stream-info request
// counting the messages on the upload's chunk subject). Anything else (the
// leftovers of a failed upload, an object overwritten with other bytes) is
// replaced by uploading the content again, which the Object Store does
// atomically (new chunks, then the metadata, then the old chunks purged).
// An object found complete is also read back (direct gets of its chunks)
// and must hash to the reference, so Putting the content again repairs an
// object whose chunks hold other bytes. After a new upload Put counts its
// chunks in the bucket before it returns (the metadata is not read back: a
// direct get of it right after an upload costs the server about as much as
// the upload itself), and reads back an upload of more than one chunk,
// uploading again (at most three uploads in all) one that does not hash to
// the reference: nats.go's Put can report success for an upload whose
// chunks hold other bytes when the stream loses its leader mid-upload (see
// readback.go). Chunks that cannot be read back are not taken for damage
// while the stream's leader still counts them (replicas lag: an error, to
// retry) or another process's upload has replaced them (that one is read
// back). The cost: a Put of content already in the bucket reads all of it
// back, and a new upload of more than one chunk is read back once, one
// direct get per chunk; the reads and uploads of one Put share one
// transfer deadline.
//
// When an upload fails, Put replaces the metadata it may have left by a
// deletion marker, but only if that metadata is still the latest message
// for the name (a publish with the expected last subject sequence), so a
// complete object that another process uploaded meanwhile is never removed;
// the failed Put then leaves nothing under the reference. If even that
// fails (the server is gone), the next Put of the content replaces the
// leftovers, and Get reports them as corrupt at once, never as a timeout.
// Retrying a failed Put is always safe, and the first success means the
// object is complete.
//
// Concurrent Puts of the same content in one process are serialized (one
// uploads, the others find it present). Across processes both may upload;
// each ends with a complete object or an error. One race remains: if one
// process's upload fails while another's of the same content succeeds, the
// failing upload's metadata can land after the successful one's check.
// Then the object reads as missing or corrupt (at once, never as a
// timeout) until the content is Put again, which repairs it.
//
// # Errors
//
// Get maps a missing object to artifact.ErrNotFound, a malformed reference
// to artifact.ErrBadRef, and content that does not hash to its reference to
// artifact.ErrCorrupt, reported by the Read that reaches the end. Metadata
// that names missing chunks or other content is artifact.ErrCorrupt from
// Get itself, before any transfer: each Get costs one metadata and one
// stream-info request before the transfer starts. Chunks whose bytes do
// not match the metadata's size or digest (which equals the reference) are
// not artifact.ErrCorrupt but an error wrapping jetstream.ErrDigestMismatch,
// a failure to retry: a replica behind after a leader change can answer
// with them, and content that stays wrong is repaired by a Put of it. The
// transfer of an object of one chunk (up to 128 KiB, the Object Store's
// default chunk size, which Put uses) is one direct get, which any replica
// answers; a larger object streams through a consumer of nats.go's Object
// Store. Operations after Close fail with ErrClosed.
//
// The store retries only within one call: a Put uploads again content
// that does not read back whole, and a chunk or metadata that a lagging
// replica reports missing is asked for again for up to two seconds. A
// failed call is the caller's to retry; nats.go reconnects in the
// background.
package natsobject

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/internal/natsconn"
)

// Name is the registered name of this backend.
const Name = "jetstream"

// Defaults for zero values.
const (
	DefaultBucket         = "controlfeed-artifacts"
	DefaultReplicas       = 1
	DefaultRequestTimeout = 5 * time.Second
	// DefaultTransferRate is the slowest transfer, in bytes per second,
	// that a Put or Get tolerates: its deadline
	// is RequestTimeout plus its size at this rate (1 MiB/s: 45 s for a
	// 40 MiB object).
	DefaultTransferRate = 1 << 20
)

// ErrClosed is wrapped by operations on a closed Store.
var ErrClosed = errors.New("natsobject: store closed")

func init() {
	artifact.Register(Name, func(cfg artifact.Config) (artifact.Store, error) {
		return New(context.Background(), cfg.NATS, &Options{Logger: cfg.Logger})
	})
	artifact.RegisterLocate(Name, func(cfg artifact.Config) (string, error) { return Locate(cfg.NATS), nil })
}

// Locate returns the location of the store New(ctx, cfg, ...) opens,
// without connecting: the bucket's name (DefaultBucket when cfg.Bucket is
// empty). The servers (cfg.URLs) are not part of it: clients may reach one
// cluster through different URLs. It is the store's artifact.LocateFunc.
func Locate(cfg artifact.NATSConfig) string {
	if cfg.Bucket == "" {
		return DefaultBucket
	}
	return cfg.Bucket
}

var (
	_ artifact.Store  = (*Store)(nil)
	_ artifact.Closer = (*Store)(nil)
)

// Options are the programmatic options of New. A nil *Options or zero fields
// select the defaults.
type Options struct {
	// Conn is an existing connection to use; the Store does not close it.
	// Nil means connect to the configured URLs; Close then closes it.
	Conn *nats.Conn
	// Logger receives diagnostics. Nil discards.
	Logger *slog.Logger
	// NATSOptions are appended to the connect options when Conn is nil.
	NATSOptions []nats.Option
	// SpoolDir holds Put's temporary files. Default os.TempDir().
	SpoolDir string
	// RequestTimeout bounds metadata requests (object info, bucket lookup,
	// chunk counts) when ctx has no earlier deadline, and is the base of a
	// transfer's deadline. Default 5s.
	RequestTimeout time.Duration
	// TransferRate is the slowest transfer, in bytes per second, that a
	// Put's upload or a Get's whole read tolerates: the transfer fails
	// (with context.DeadlineExceeded, and Put removes what it left) after
	// RequestTimeout + size/TransferRate, or at ctx's deadline if that is
	// earlier (a later one does not extend it), so a broker that stops
	// answering mid-transfer cannot hold the caller. Default
	// DefaultTransferRate (1 MiB/s).
	TransferRate int64
	// TransferTimeout, if set, replaces the size-scaled deadline of a
	// transfer with this fixed one (ctx's earlier deadline still wins).
	// Zero (the default) scales the deadline to the object's size.
	TransferTimeout time.Duration
}

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.SpoolDir == "" {
		o.SpoolDir = os.TempDir()
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.TransferRate == 0 {
		o.TransferRate = DefaultTransferRate
	}
}

// transferDeadline returns the store's bound of a transfer of size bytes:
// TransferTimeout if set, else RequestTimeout plus
// size at TransferRate.
func (o *Options) transferDeadline(size uint64) time.Duration {
	if o.TransferTimeout > 0 {
		return o.TransferTimeout
	}
	return o.RequestTimeout + time.Duration(float64(size)/float64(o.TransferRate)*float64(time.Second))
}

// transferCtx bounds ctx by the transfer deadline of size bytes; a caller's
// earlier deadline stays. A later one does not replace the store's bound:
// the applier's CallTimeout (a minute) only catches hangs, and a transfer
// whose chunk delivery was lost (a leader change on a cluster) must fail
// within the object's own bound and be retried, not wait for it.
func (s *Store) transferCtx(ctx context.Context, size uint64) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.opts.transferDeadline(size))
}

// Validate reports negative timeouts.
func (o Options) Validate() error {
	if o.RequestTimeout < 0 {
		return fmt.Errorf("natsobject: options: RequestTimeout %v is negative", o.RequestTimeout)
	}
	if o.TransferTimeout < 0 {
		return fmt.Errorf("natsobject: options: TransferTimeout %v is negative", o.TransferTimeout)
	}
	if o.TransferRate < 0 {
		return fmt.Errorf("natsobject: options: TransferRate %d is negative", o.TransferRate)
	}
	return nil
}

// Store is an artifact.Store on a JetStream Object Store bucket. It is safe
// for concurrent use.
type Store struct {
	nc     *nats.Conn
	own    bool
	js     jetstream.JetStream
	obs    jetstream.ObjectStore
	stream jetstream.Stream // the bucket's stream, to count chunks
	bucket string
	cfg    artifact.NATSConfig
	opts   Options

	openMu sync.Mutex // guards obs and stream, set once the bucket is found

	mu      sync.Mutex
	closed  bool
	putting map[string]*sync.Mutex // per-reference Put serialization
	refs    map[string]int
}

// New connects (or uses opts.Conn) and opens the bucket. With cfg.Create
// (the producer) it creates a missing bucket, and refuses an existing one
// whose replicas differ from cfg.Replicas (a *ReplicasError naming the nats
// command that fixes it) or that is memory-backed, before any create
// request. Without it (a node) it never creates the bucket: a missing one
// is looked up again by each Get and Put, which fail with an error wrapping
// ErrNoBucket (an outage, not a missing artifact) until the producer has
// created it. ctx bounds the setup.
func New(ctx context.Context, cfg artifact.NATSConfig, opts *Options) (*Store, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if cfg.RequestTimeout < 0 {
		return nil, fmt.Errorf("natsobject: config: request timeout %v is negative", cfg.RequestTimeout)
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = cfg.RequestTimeout
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	o.setDefaults()
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = DefaultReplicas
	}
	if len(cfg.URLs) == 0 {
		cfg.URLs = []string{nats.DefaultURL}
	}
	if cfg.Replicas < 1 || cfg.Replicas > 5 {
		return nil, fmt.Errorf("natsobject: config: replicas %d is not in 1..5", cfg.Replicas)
	}
	if (cfg.TLSCertFile == "") != (cfg.TLSKeyFile == "") {
		return nil, errors.New("natsobject: config: TLS cert file and key file must be set together")
	}
	s := &Store{bucket: cfg.Bucket, opts: o, putting: map[string]*sync.Mutex{}, refs: map[string]int{}}
	if o.Conn != nil {
		s.nc = o.Conn
	} else {
		auth := natsconn.Auth{
			CredsFile: cfg.CredsFile, User: cfg.User, Password: cfg.Password,
			TLSCAFile: cfg.TLSCAFile, TLSCertFile: cfg.TLSCertFile, TLSKeyFile: cfg.TLSKeyFile,
		}
		nopts := natsconn.Options("controlfeed-artifacts", 500*time.Millisecond, auth,
			append([]nats.Option{nats.Timeout(o.RequestTimeout)}, o.NATSOptions...)...)
		nc, err := natsconn.Connect("natsobject", cfg.URLs, auth, nopts...)
		if err != nil {
			return nil, err
		}
		s.nc, s.own = nc, true
	}
	js, err := jetstream.New(s.nc, jetstream.WithDefaultTimeout(o.RequestTimeout))
	if err != nil {
		s.closeConn()
		return nil, fmt.Errorf("natsobject: jetstream: %w", err)
	}
	s.js, s.cfg = js, cfg
	if err := s.openBucket(ctx); err != nil {
		s.closeConn()
		return nil, err
	}
	return s, nil
}

// Name returns "jetstream".
func (s *Store) Name() string { return Name }

// Bucket returns the bucket name.
func (s *Store) Bucket() string { return s.bucket }

func (s *Store) closeConn() {
	if s.own {
		s.nc.Close()
	}
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// lock serializes Puts of one reference within this Store.
func (s *Store) lock(ref string) func() {
	s.mu.Lock()
	m := s.putting[ref]
	if m == nil {
		m = &sync.Mutex{}
		s.putting[ref] = m
	}
	s.refs[ref]++
	s.mu.Unlock()
	m.Lock()
	return func() {
		m.Unlock()
		s.mu.Lock()
		if s.refs[ref]--; s.refs[ref] == 0 {
			delete(s.refs, ref)
			delete(s.putting, ref)
		}
		s.mu.Unlock()
	}
}

// Get streams the object ref, verifying it against ref as it is read (and
// against the Object Store's own digest). Before it starts the transfer it
// checks that every chunk the object's metadata names is in the bucket, so
// the metadata a failed upload left behind is reported at once as
// artifact.ErrCorrupt instead of as a timeout. ctx governs the whole read,
// not just the call: keep it alive until the stream is closed.
func (s *Store) Get(ctx context.Context, ref string) (io.ReadCloser, error) {
	if err := artifact.ParseRef(ref); err != nil {
		return nil, fmt.Errorf("natsobject: get: %w", err)
	}
	if s.isClosed() {
		return nil, fmt.Errorf("natsobject: get %s: %w", ref, ErrClosed)
	}
	if err := s.ready(ctx); err != nil {
		return nil, fmt.Errorf("natsobject: get %s: %w", ref, err)
	}
	info, err := s.readable(ctx, ref)
	if errors.Is(err, artifact.ErrNotFound) {
		info, err = s.confirmAbsent(ctx, ref, err)
	}
	if err != nil {
		return nil, err
	}
	// Bound the whole transfer, whatever the caller's deadline: a request
	// whose reply is lost (the server restarted mid-request, a leader
	// change) would otherwise wait for it, or forever (see
	// Options.TransferRate).
	ctx, cancel := s.transferCtx(ctx, info.Size)
	beforeTransfer()
	if info.Chunks <= 1 {
		// One direct get (see chunkReader): the object of a control event
		// is small, and a read without a consumer costs less than half.
		cr := s.newChunkReader(ctx, ref, info)
		return &reader{r: artifact.VerifyReader(cr, ref), c: cr, cancel: cancel}, nil
	}
	// More chunks stream through nats.go's consumer, which does not wait a
	// round trip per chunk.
	res, err := s.obs.Get(ctx, ref)
	for end := time.Now().Add(min(lagPatience, s.opts.RequestTimeout)); errors.Is(err, jetstream.ErrObjectNotFound) && time.Now().Before(end) && ctx.Err() == nil; {
		// readable has just seen it complete: another replica that lags
		// answered this read (see confirmAbsent).
		time.Sleep(50 * time.Millisecond)
		res, err = s.obs.Get(ctx, ref)
	}
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		cancel()
		return nil, fmt.Errorf("natsobject: get %s from bucket %q: found complete, then missing: the replicas that answered lag (retry the Get)", ref, s.bucket)
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("natsobject: get %s from bucket %q (%s): %w", ref, s.bucket, s.brokerState(), err)
	}
	return &reader{r: artifact.VerifyReader(digestReader{res, ref}, ref), c: res, cancel: cancel}, nil
}

// brokerState describes the connection for an error message: its status
// and the server it is connected to.
func (s *Store) brokerState() string {
	url := s.nc.ConnectedUrlRedacted()
	if url == "" {
		url = "no server"
	}
	return fmt.Sprintf("connection %s, server %s", strings.ToLower(s.nc.Status().String()), url)
}

type reader struct {
	r      io.Reader
	c      io.Closer
	cancel context.CancelFunc
}

func (r *reader) Read(p []byte) (int, error) { return r.r.Read(p) }
func (r *reader) Close() error {
	defer r.cancel()
	return r.c.Close()
}

// digestReader names the failing Get in read errors of nats.go's object
// reader. The Object Store's own digest mismatch is not ErrCorrupt: in a
// cluster a read after a leader change can assemble chunks a replica had
// not caught up on, and a retry reads them whole (the content is still
// checked against its reference, which is ErrCorrupt); nats.go also
// reports other failures of its chunk delivery (its context ended, an
// unreadable reply subject) as a digest mismatch. A mismatch that persists
// shows as a Get that keeps failing, never as a halt for a transient
// cause, and Putting the content again repairs it (see readback.go).
type digestReader struct {
	r   io.Reader
	ref string
}

func (d digestReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	switch {
	case err == nil || err == io.EOF:
	case errors.Is(err, jetstream.ErrDigestMismatch):
		err = fmt.Errorf("natsobject: get %s: the chunks read do not match the object's digest (a replica behind after a leader change, or a damaged bucket; retry the Get, Put the content again if it persists): %w", d.ref, err)
	default:
		err = fmt.Errorf("natsobject: get %s: read the chunks (the broker did not deliver them within the transfer's deadline, or failed; retry the Get): %w", d.ref, err)
	}
	return n, err
}

// chunkReader reads the chunks of one upload in stream order, one direct
// get each (any replica answers, and no consumer is created: nats.go's Get
// creates one per read, which on a cluster needs the metadata leader, and
// it reports other failures of its chunk delivery as a digest mismatch).
// Get uses it for objects of one chunk.
// It checks the bytes against the metadata's size and digest at the end,
// and reports a mismatch as an error of its own, before the caller's
// VerifyReader could take the end for content that does not hash to its
// reference (artifact.ErrCorrupt, which halts a node): chunks read from a
// replica behind after a leader change are a transient failure, and
// content that stays wrong is repaired by Putting it again (see
// readback.go).
type chunkReader struct {
	s      *Store
	ctx    context.Context
	ref    string
	info   *jetstream.ObjectInfo
	subj   string
	seq    uint64 // the stream sequence to read the next chunk from
	chunks uint32 // chunks read
	size   uint64 // bytes read
	h      hash.Hash
	buf    []byte // the rest of the current chunk
	err    error
	// problem says what is wrong with the chunks once a Read failed for
	// them (a chunk not found, or bytes that do not match the metadata),
	// without the operation: Get and Put's read back word their own errors.
	problem string
}

// newChunkReader reads the chunks of the upload info names for object ref
// within ctx.
func (s *Store) newChunkReader(ctx context.Context, ref string, info *jetstream.ObjectInfo) *chunkReader {
	return &chunkReader{s: s, ctx: ctx, ref: ref, info: info, subj: chunkSubject(s.bucket, info.NUID), seq: 1, h: controlevent.NewHash()}
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	for len(c.buf) == 0 {
		if c.chunks == c.info.Chunks {
			c.err = c.end()
			return 0, c.err
		}
		msg, err := c.s.nextChunk(c.ctx, c.subj, c.seq)
		if err != nil {
			c.err = c.chunkErr(err)
			return 0, c.err
		}
		c.chunks++
		c.size += uint64(len(msg.Data))
		c.h.Write(msg.Data)
		c.seq = msg.Sequence + 1
		c.buf = msg.Data
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

// end checks what was read against the metadata: io.EOF if it fits, else
// an error wrapping jetstream.ErrDigestMismatch.
func (c *chunkReader) end() error {
	sum := c.h.Sum(nil)
	want, err := jetstream.DecodeObjectDigest(c.info.Digest)
	var what string
	switch {
	case err != nil:
		what = fmt.Sprintf("its metadata digest %q is unreadable", c.info.Digest)
	case c.size != c.info.Size:
		what = fmt.Sprintf("they hold %d bytes, its metadata says %d", c.size, c.info.Size)
	case !bytes.Equal(sum, want):
		what = "they do not match its metadata's digest"
	default:
		return io.EOF
	}
	c.problem = fmt.Sprintf("read %d of %d chunks of upload %s (the last at stream sequence %d, server %s; sha256 %x), and %s",
		c.chunks, c.info.Chunks, c.info.NUID, c.seq-1, c.s.nc.ConnectedServerName(), sum, what)
	return fmt.Errorf("natsobject: get %s: %s (a replica behind after a leader change, or a damaged bucket; retry the Get, Put the content again if it persists): %w",
		c.ref, c.problem, jetstream.ErrDigestMismatch)
}

func (c *chunkReader) chunkErr(err error) error {
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		c.problem = fmt.Sprintf("chunk %d of %d of upload %s is not in bucket %q (from stream sequence %d on)",
			c.chunks+1, c.info.Chunks, c.info.NUID, c.s.bucket, c.seq)
		return fmt.Errorf("natsobject: get %s: %s although the stream's leader counted it: the replicas that answered lag, or the chunks were purged since "+
			"(retry the Get, Put the content again if it persists): %w", c.ref, c.problem, err)
	}
	if cerr := c.ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		err = fmt.Errorf("%w (%v)", cerr, err)
	}
	return fmt.Errorf("natsobject: get %s: read chunk %d of %d from bucket %q (%s; the broker did not answer within the transfer's deadline, or failed; retry the Get): %w",
		c.ref, c.chunks+1, c.info.Chunks, c.s.bucket, c.s.brokerState(), err)
}

// Close does nothing of its own: the reader's Close ends the transfer's
// context, which fails any later chunk request.
func (c *chunkReader) Close() error { return nil }

// ctxReader fails reads once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Close closes the connection if the Store opened it; later calls fail with
// ErrClosed. Streams returned by Get stop working. Close is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.closeConn()
	return nil
}
