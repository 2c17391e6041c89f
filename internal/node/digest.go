package node

import (
	"context"
	"time"

	"github.com/controlfeed/controlfeed/applier"
)

// appDigest returns Config.AppDigest's digest, computed again when the last
// one is older than Config.AppDigestInterval, or nil without AppDigest.
// Concurrent callers wait for one computation. A failure is logged and
// leaves the digest out (the previous one, if any, is kept): the status
// and health of the node do not depend on it.
func (n *Node) appDigest(ctx context.Context) *AppDigest {
	if n.cfg.AppDigest == nil || IsPostgresURL(n.cfg.DB) { // a producer on PostgreSQL has no applier tables
		return nil
	}
	n.appMu.Lock()
	defer n.appMu.Unlock()
	if n.appTried.IsZero() || time.Since(n.appTried) >= n.cfg.AppDigestInterval {
		n.appTried = time.Now()
		d, err := applier.ReadAppDigest(ctx, n.db, n.cfg.AppDigest)
		if err != nil {
			n.log.Warn("node: application digest failed; status omits it", "err", err)
		} else {
			n.app = &AppDigest{Cursor: d.Cursor, Digest: d.Digest, At: time.Now()}
		}
	}
	if n.app == nil {
		return nil
	}
	a := *n.app
	return &a
}
