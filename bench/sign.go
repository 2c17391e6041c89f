package bench

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/controlfeed/controlfeed/outbox"
	"github.com/controlfeed/controlfeed/trust"
)

// runSign measures what signing costs (package trust): the batch pump with
// and without a signing key, and a node's catch-up with and without
// verifying, each pair in the same run on the same server.
func runSign(ctx context.Context, e *env) ([]Result, error) {
	srv, err := startServer(e.dir)
	if err != nil {
		return nil, err
	}
	defer srv.close()
	p, err := newPool(ctx, filepath.Join(e.dir, "artifacts"))
	if err != nil {
		return nil, err
	}
	key, err := trust.NewPrivateKey(make([]byte, 32))
	if err != nil {
		return nil, err
	}
	ring, err := trust.NewKeyring(key.Public())
	if err != nil {
		return nil, err
	}
	var out []Result

	n := e.cfg.PumpBatchEvents
	rates := map[bool]float64{}
	for _, signed := range []bool{false, true} {
		db, err := openDB(ctx, filepath.Join(e.dir, fmt.Sprintf("pump-%v.db", signed)))
		if err != nil {
			return out, err
		}
		cfg := &outbox.Config{}
		if signed {
			cfg.Signer = key
		}
		rates[signed], err = timePassWith(ctx, srv, p, db, fmt.Sprintf("SIGNPUMP%v", signed), n, true, cfg)
		db.Close()
		if err != nil {
			return out, err
		}
	}
	out = append(out, ratioResult("sign/pump", "events/s", rates[true], rates[false], 0,
		fmt.Sprintf("%d rows; batch pump signing each event (ed25519) vs not signing", n)))

	n = e.cfg.ApplyEvents
	for _, signed := range []bool{false, true} {
		cfg := srv.feedConfig(fmt.Sprintf("SIGNAPPLY%v", signed), "node-1")
		var k *trust.PrivateKey
		var kr *trust.Keyring
		if signed {
			k, kr = key, ring
		}
		if err := fillStreamWith(ctx, cfg, p, n, k); err != nil {
			return out, err
		}
		db, err := openDB(ctx, filepath.Join(e.dir, fmt.Sprintf("node-%v.db", signed)))
		if err != nil {
			return out, err
		}
		took, err := catchUpWith(ctx, db, cfg, p.store, n, kr)
		db.Close()
		if err != nil {
			return out, err
		}
		rates[signed] = float64(n) / took.Seconds()
	}
	out = append(out, ratioResult("sign/catch-up", "events/s", rates[true], rates[false], 0.9,
		fmt.Sprintf("%d signed kv.put events verified by the node vs the same events unsigned and unverified", n)))
	return out, nil
}
