package chaos

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/natsobject"
)

// The JetStream Object Store as the run's artifact store (Config.Artifacts
// = ArtifactsJetStream, with the jetstream feed): the writer uploads every
// value into the bucket, the nodes fetch from it through the same broker
// that the harness restarts, stalls and cuts, so a fetch meets every broker
// fault. Corrupt artifacts are objects put under a reference with other
// bytes (through the raw Object Store API), repaired by the store's own Put,
// which must detect and replace them; missing ones are never uploaded. A
// full store is the bucket at its byte limit: the harness lowers the
// bucket stream's MaxBytes to what it holds (the bucket discards new
// messages, as an operator's byte-limited bucket does), so every upload
// fails mid-way; the checker then proves that no event references an
// object that was not stored whole (no halt without a bad input, identical
// states).

// Artifact stores of a chaos run.
const (
	ArtifactsFile      = "file"
	ArtifactsJetStream = "jetstream"
)

// openObjectStore opens the harness's own client of the bucket (creating
// it, as the producer would).
func (h *harness) openObjectStore(ctx context.Context) error {
	s, err := natsobject.New(ctx, artifact.NATSConfig{URLs: []string{h.natsURL}, Create: true}, &natsobject.Options{Conn: h.nc})
	if err != nil {
		return fmt.Errorf("chaos: open the artifact bucket: %w", err)
	}
	h.obj = s
	return nil
}

// arts is the store the harness puts artifacts into.
func (h *harness) arts() artifact.Store {
	if h.obj != nil {
		return h.obj
	}
	return h.store
}

// corruptObject puts bytes that do not match ref under ref's object name.
func (h *harness) corruptObject(ctx context.Context, ref string) error {
	obs, err := h.js.ObjectStore(ctx, natsobject.DefaultBucket)
	if err != nil {
		return err
	}
	_, err = obs.PutBytes(ctx, ref, []byte("corrupted by the chaos harness"))
	return err
}

// bucketStream is the stream behind the artifact bucket.
func (h *harness) bucketStream(ctx context.Context) (jetstream.Stream, jetstream.StreamConfig, error) {
	st, err := h.js.Stream(ctx, "OBJ_"+natsobject.DefaultBucket)
	if err != nil {
		return nil, jetstream.StreamConfig{}, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, jetstream.StreamConfig{}, err
	}
	return st, info.Config, nil
}

// setBucketLimit sets the bucket's byte limit: full (the bytes it holds
// now) or none (-1). Retried across broker restarts for up to 30 s.
func (h *harness) setBucketLimit(ctx context.Context, full bool) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := func() error {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			st, cfg, err := h.bucketStream(cctx)
			if err != nil {
				return err
			}
			cfg.MaxBytes = -1
			if full {
				info, err := st.Info(cctx)
				if err != nil {
					return err
				}
				cfg.MaxBytes = int64(info.State.Bytes) + 1
			}
			_, err = h.js.UpdateStream(cctx, cfg)
			return err
		}()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}
