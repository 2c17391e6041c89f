package natscatalog_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/controlfeed/controlfeed/internal/natsembed"
	"github.com/controlfeed/controlfeed/snapshot"
	"github.com/controlfeed/controlfeed/snapshot/catalogtest"
	"github.com/controlfeed/controlfeed/snapshot/natscatalog"
)

var streams atomic.Int64

func config(srv *natsembed.Server, create bool) snapshot.CatalogConfig {
	var cfg snapshot.CatalogConfig
	cfg.Feed.NATS.URLs = []string{srv.ClientURL()}
	cfg.Create = create
	return cfg
}

func TestConformance(t *testing.T) {
	srv := natsembed.StartForTest(t)
	catalogtest.Run(t, func(t *testing.T) snapshot.Catalog {
		cfg := config(srv, true)
		cfg.Feed.NATS.Stream = fmt.Sprintf("S%d", streams.Add(1))
		c, err := natscatalog.New(context.Background(), cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	})
}

// A node never creates the bucket: until the producer has, its calls say
// so; once it exists they work.
func TestNodeDoesNotCreate(t *testing.T) {
	ctx := context.Background()
	srv := natsembed.StartForTest(t)
	node, err := snapshot.OpenCatalog(ctx, natscatalog.Name, config(srv, false))
	if err != nil {
		t.Fatal(err)
	}
	defer node.(*natscatalog.Catalog).Close()
	if _, err := node.Latest(ctx); !errors.Is(err, snapshot.ErrNoCatalog) {
		t.Fatalf("Latest before the producer created the bucket = %v, want ErrNoCatalog", err)
	}
	prod, err := natscatalog.New(ctx, config(srv, true), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if _, err := node.Latest(ctx); !errors.Is(err, snapshot.ErrNoSnapshot) {
		t.Fatalf("Latest once the bucket exists = %v, want ErrNoSnapshot", err)
	}
	// Replicas are checked by the producer.
	cfg := config(srv, true)
	cfg.Feed.NATS.Replicas = 3
	_, err = natscatalog.New(ctx, cfg, nil)
	var re *natscatalog.ReplicasError
	if !errors.As(err, &re) || re.Have != 1 || re.Want != 3 {
		t.Fatalf("New with other replicas = %v, want a *ReplicasError 1 vs 3", err)
	}
}
