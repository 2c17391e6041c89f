package natscatalog_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/controlfeed/controlfeed/snapshot"
	"github.com/controlfeed/controlfeed/snapshot/natscatalog"
)

// A node looks up the fleet's latest snapshot on the JetStream feed it
// reads; the producer created the bucket (CatalogConfig.Create).
func Example() {
	ctx := context.Background()
	var cfg snapshot.CatalogConfig
	cfg.Feed.NATS.URLs = []string{"nats://127.0.0.1:4222"}
	cat, err := snapshot.OpenCatalog(ctx, natscatalog.Name, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cat.(*natscatalog.Catalog).Close()
	rec, err := cat.Latest(ctx)
	switch {
	case errors.Is(err, snapshot.ErrNoSnapshot), errors.Is(err, snapshot.ErrNoCatalog):
		fmt.Println("nothing published: replay the feed from the start")
	case err != nil:
		fmt.Println(err)
	default:
		fmt.Println("restore", rec.Manifest, "and resume after", rec.ControlVersion)
	}
}
