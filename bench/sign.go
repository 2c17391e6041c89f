package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/controlfeed/controlfeed/feed"

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

	// The catch-ups run in the order unsigned, signed, signed, unsigned,
	// signed, unsigned, unsigned, signed (each a new node with its own
	// consumer and database on the filled stream), so that a drift of the
	// machine's speed over the run (page cache, a neighbour on the VM, the
	// server's growing store) weighs on both sides alike; each side's rate
	// is its four runs' events over their time, and the note gives the
	// ratio of each adjacent pair, so the spread shows. A single pair,
	// unsigned first, spread 0.81-1.18 on one VM.
	n = e.cfg.ApplyEvents
	cfgs := map[bool]func(node string) feed.NATSConfig{}
	for _, signed := range []bool{false, true} {
		stream := fmt.Sprintf("SIGNAPPLY%v", signed)
		cfgs[signed] = func(node string) feed.NATSConfig { return srv.feedConfig(stream, node) }
		var k *trust.PrivateKey
		if signed {
			k = key
		}
		if err := fillStreamWith(ctx, cfgs[signed]("node-1"), p, n, k); err != nil {
			return out, err
		}
	}
	took := map[bool]time.Duration{}
	order := []bool{false, true, true, false, true, false, false, true}
	var pairs []string
	var prev time.Duration
	for i, signed := range order {
		var kr *trust.Keyring
		if signed {
			kr = ring
		}
		node := fmt.Sprintf("node-%d", i+1)
		db, err := openDB(ctx, filepath.Join(e.dir, fmt.Sprintf("%s-%v.db", node, signed)))
		if err != nil {
			return out, err
		}
		t, err := catchUpWith(ctx, db, cfgs[signed](node), p.store, n, kr)
		db.Close()
		if err != nil {
			return out, err
		}
		took[signed] += t
		if i%2 == 1 { // signed/unsigned events/s of this pair
			ts, tu := t, prev
			if !signed {
				ts, tu = prev, t
			}
			pairs = append(pairs, fmt.Sprintf("%.2f", tu.Seconds()/ts.Seconds()))
		}
		prev = t
	}
	for _, signed := range []bool{false, true} {
		rates[signed] = float64(len(order)/2*n) / took[signed].Seconds()
	}
	out = append(out, ratioResult("sign/catch-up", "events/s", rates[true], rates[false], 0.9,
		fmt.Sprintf("%d signed kv.put events verified by the node vs the same events unsigned and unverified; four catch-ups each, alternating (pair ratios %s)", n, strings.Join(pairs, " "))))
	return out, nil
}
