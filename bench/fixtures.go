package bench

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/filestore"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/feed/natsfeed"
	"github.com/controlfeed/controlfeed/internal/natsembed"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
	"github.com/controlfeed/controlfeed/kv"
	"github.com/controlfeed/controlfeed/outbox"
	"github.com/controlfeed/controlfeed/trust"
)

// poolSize is the number of distinct payloads events cycle through: every
// event names a real, verified artifact without writing one file per event.
const poolSize = 256

// payloadSize is the size of each payload, a typical small config value.
const payloadSize = 200

// pool is a set of artifacts stored in a filestore.
type pool struct {
	store    artifact.Store
	refs     []string
	payloads [][]byte
}

func newPool(ctx context.Context, dir string) (*pool, error) {
	st, err := filestore.New(dir, nil)
	if err != nil {
		return nil, err
	}
	p := &pool{store: st}
	for i := range poolSize {
		b := make([]byte, payloadSize)
		for j := range b {
			b[j] = byte('a' + (i+j)%26)
		}
		copy(b, fmt.Sprintf("value-%03d:", i))
		ref, err := artifact.PutBytes(ctx, st, b)
		if err != nil {
			return nil, fmt.Errorf("store artifact %d: %w", i, err)
		}
		p.refs, p.payloads = append(p.refs, ref), append(p.payloads, b)
	}
	return p, nil
}

// event returns the i-th kv.put event (1-based), unpublished.
func (p *pool) event(i int, createdAt time.Time) controlevent.Event {
	ref := p.refs[i%poolSize]
	return controlevent.Event{
		EventID:     fmt.Sprintf("bench-%09d", i),
		Type:        kv.TypePut,
		Key:         fmt.Sprintf("key/%09d", i),
		Version:     1,
		ArtifactRef: ref,
		Checksum:    ref,
		CreatedAt:   createdAt,
	}
}

// server is an embedded NATS server with its own store directory.
type server struct {
	srv *natsembed.Server
	url string
}

func startServer(dir string) (*server, error) {
	srv, err := natsembed.Start(natsembed.Options{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		return nil, err
	}
	return &server{srv: srv, url: srv.ClientURL()}, nil
}

func (s *server) close() { s.srv.Shutdown() }

// feedConfig is a jetstream feed configuration on its own stream.
func (s *server) feedConfig(stream, node string) feed.NATSConfig {
	return feed.NATSConfig{URLs: []string{s.url}, Stream: stream, Subject: "bench." + stream, NodeName: node}
}

// rawJS connects a plain JetStream client.
func (s *server) rawJS(ctx context.Context, stream string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(s.url)
	if err != nil {
		return nil, nil, fmt.Errorf("connect %s: %w", s.url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{"bench." + stream},
		Storage: jetstream.FileStorage, Duplicates: natsfeed.DefaultDuplicateWindow})
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("create stream %s: %w", stream, err)
	}
	return nc, js, nil
}

// openDB opens a SQLite database with controlfeed's settings and migrates
// the applier, kv and outbox schemas.
func openDB(ctx context.Context, path string) (*sql.DB, error) {
	db, err := sqlitedb.Open(ctx, path)
	if err != nil {
		return nil, err
	}
	for _, m := range []func(context.Context, *sql.DB) error{applier.Migrate, kv.Migrate, outbox.Migrate} {
		if err := m(ctx, db); err != nil {
			db.Close()
			return nil, err
		}
	}
	return db, nil
}

// fillStream publishes events 1..n with the jetstream Sink's AppendBatch.
func fillStream(ctx context.Context, cfg feed.NATSConfig, p *pool, n int) error {
	return fillStreamWith(ctx, cfg, p, n, nil)
}

// fillStreamWith is fillStream with every event signed by k (in one chain),
// as a signing pump publishes them; k nil signs nothing.
func fillStreamWith(ctx context.Context, cfg feed.NATSConfig, p *pool, n int, k *trust.PrivateKey) error {
	var head trust.Head
	sink, err := natsfeed.NewSink(ctx, cfg, nil)
	if err != nil {
		return err
	}
	defer sink.Close()
	now := time.Now().UTC()
	const chunk = 4096
	evs := make([]controlevent.Event, 0, chunk)
	for i := 1; i <= n; i += chunk {
		evs = evs[:0]
		for j := i; j < i+chunk && j <= n; j++ {
			e := p.event(j, now)
			if k != nil {
				var err error
				if e, head, err = trust.Sign(k, e, head); err != nil {
					return err
				}
			}
			evs = append(evs, e)
		}
		if _, err := sink.AppendBatch(ctx, evs); err != nil {
			return fmt.Errorf("fill stream %s: %w", cfg.Stream, err)
		}
	}
	return nil
}

// catchUp applies everything in the stream to db with an applier reading
// node's consumer, as the daemon does (Applier.Run), until the cursor
// reaches n. It returns the time from its start until the cursor reached n:
// Run's shutdown after that (a last checkpoint of the WAL) is not counted.
func catchUp(ctx context.Context, db *sql.DB, cfg feed.NATSConfig, store artifact.Store, n int) (time.Duration, error) {
	return catchUpWith(ctx, db, cfg, store, n, nil)
}

// catchUpWith is catchUp with the applier verifying every event against kr
// (nil: no verification).
func catchUpWith(ctx context.Context, db *sql.DB, cfg feed.NATSConfig, store artifact.Store, n int, kr *trust.Keyring) (time.Duration, error) {
	start := time.Now()
	src, err := natsfeed.NewSource(ctx, cfg, nil)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	a, err := applier.New(db, src, store, &applier.Config{Handlers: kv.Handlers(), Keyring: kr})
	if err != nil {
		return 0, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(rctx) }()
	exited := false
	defer func() {
		cancel()
		if !exited {
			<-done
		}
	}()
	deadline := time.Now().Add(10 * time.Minute)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		st := a.Status()
		switch {
		case st.Cursor >= uint64(n):
			return time.Since(start), nil
		case st.Halted != nil:
			return 0, fmt.Errorf("catch up to %d: halted at control version %d: %s", n, st.Halted.ControlVersion, st.Halted.Error)
		case time.Now().After(deadline):
			return 0, fmt.Errorf("catch up to %d: cursor %d: %w", n, st.Cursor, errNotConverged)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case err := <-done:
			exited = true
			return 0, fmt.Errorf("catch up to %d: applier stopped at cursor %d: %v", n, a.Status().Cursor, err)
		case <-tick.C:
		}
	}
}
