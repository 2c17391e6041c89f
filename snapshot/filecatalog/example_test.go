package filecatalog_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/snapshot"
	"github.com/controlfeed/controlfeed/snapshot/filecatalog"
)

// A snapshot is published beside a file feed and found again by a joining
// node in one read.
func Example() {
	ctx := context.Background()
	feedDir, _ := os.MkdirTemp("", "filecatalog-example-")
	defer os.RemoveAll(feedDir)

	var cfg snapshot.CatalogConfig
	cfg.Feed.FileDir = feedDir
	cat, err := snapshot.OpenCatalog(ctx, filecatalog.Name, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	rec := snapshot.Record{Manifest: artifact.RefOf([]byte("a manifest")), ControlVersion: 1200, AppliedEvents: 1200,
		Size: 1 << 20, Node: "edge-1", CreatedAt: time.Now(), PublishedAt: time.Now()}
	if err := cat.Publish(ctx, rec); err != nil {
		fmt.Println(err)
		return
	}
	latest, err := cat.Latest(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("latest snapshot covers the feed up to", latest.ControlVersion)
	fmt.Println("useful on a feed whose oldest event is 1201:", latest.Covers(1201))
	fmt.Println("useful on a feed whose oldest event is 1500:", latest.Covers(1500))
	// Output:
	// latest snapshot covers the feed up to 1200
	// useful on a feed whose oldest event is 1201: true
	// useful on a feed whose oldest event is 1500: false
}
