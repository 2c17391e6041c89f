package natsfleet_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/controlfeed/controlfeed/feed"
	"github.com/controlfeed/controlfeed/fleet"
	"github.com/controlfeed/controlfeed/fleet/fleettest"
	"github.com/controlfeed/controlfeed/fleet/natsfleet"
	"github.com/controlfeed/controlfeed/internal/natsembed"
)

func TestConformance(t *testing.T) {
	srv := natsembed.StartForTest(t)
	var n atomic.Int64
	fleettest.Run(t, func(t *testing.T) fleet.Store {
		cfg := feed.SourceConfig{NATS: feed.NATSConfig{URLs: []string{srv.ClientURL()}, Stream: fmt.Sprintf("S%d", n.Add(1))}}
		s, err := natsfleet.New(context.Background(), fleet.Config{Feed: cfg, Create: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// A node never creates the bucket: until the producer has, its calls fail
// with ErrNoStore; the producer refuses a bucket with other replicas.
func TestNew_CreateAndReplicas(t *testing.T) {
	srv := natsembed.StartForTest(t)
	ctx := context.Background()
	cfg := feed.SourceConfig{NATS: feed.NATSConfig{URLs: []string{srv.ClientURL()}}}
	nodeSide, err := natsfleet.New(ctx, fleet.Config{Feed: cfg}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nodeSide.Close()
	if err := nodeSide.Put(ctx, fleet.Report{Format: fleet.Format, Node: "n1"}); !errors.Is(err, fleet.ErrNoStore) {
		t.Fatalf("Put before the producer created the bucket: %v; want ErrNoStore", err)
	}
	producer, err := natsfleet.New(ctx, fleet.Config{Feed: cfg, Create: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	producer.Close()
	if producer.Bucket() != "CONTROLFEED_NODES" {
		t.Errorf("bucket %q, want CONTROLFEED_NODES", producer.Bucket())
	}
	if err := nodeSide.Put(ctx, fleet.Report{Format: fleet.Format, Node: "n1"}); err != nil {
		t.Fatalf("Put once the bucket exists: %v", err)
	}
	cfg.NATS.Replicas = 3
	_, err = natsfleet.New(ctx, fleet.Config{Feed: cfg, Create: true}, nil)
	var re *natsfleet.ReplicasError
	if !errors.As(err, &re) || re.Have != 1 || re.Want != 3 {
		t.Errorf("New with 3 replicas on a 1-replica bucket: %v; want a ReplicasError", err)
	}
}
