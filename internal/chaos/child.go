package chaos

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/filestore"
	"github.com/controlfeed/controlfeed/artifact/natsobject"
	"github.com/controlfeed/controlfeed/internal/natsembed"
	"github.com/controlfeed/controlfeed/internal/node"
	"github.com/controlfeed/controlfeed/kv"
)

// ChildEnv is the environment variable that makes a program that calls
// MaybeChild run one of the harness's child processes instead of its usual
// work. Its name has no CONTROLFEED_ prefix because the controlfeed command
// rejects unknown CONTROLFEED_* variables.
const ChildEnv = "CHAOS_CHILD"

// MaybeChild runs a child process of the harness if ChildEnv is set and
// reports whether it did; err is the child's result. A program (a test
// binary's TestMain, cmd/controlfeed-chaos) calls it first thing and exits
// with status 1 on a non-nil err, 0 otherwise. The harness re-executes that
// program with ChildEnv set for two roles:
//
//   - "broker ADDR STOREDIR": an embedded NATS JetStream server (package
//     natsembed) listening on ADDR, until SIGTERM or SIGKILL.
//   - "writer DB ARTIFACTDIR TARGET SEED RATE": the producer's writer: kv.Put
//     and kv.Delete on DB (file artifact store in ARTIFACTDIR) until DB's
//     outbox holds TARGET events, at most RATE per second. It reads
//     CONTROLFEED_FAILPOINTS like the controlfeed command, so it can be
//     killed at kv.after-commit and filestore.mid-write; a restarted writer
//     continues from the outbox count.
func MaybeChild(args []string) (ran bool, err error) {
	mode := os.Getenv(ChildEnv)
	if mode == "" {
		return false, nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	switch mode {
	case "broker":
		if len(args) != 2 {
			return true, fmt.Errorf("chaos: broker child: want ADDR STOREDIR, got %q", args)
		}
		return true, runBroker(ctx, args[0], args[1])
	case "writer":
		if len(args) != 5 {
			return true, fmt.Errorf("chaos: writer child: want DB ARTIFACTDIR TARGET SEED RATE, got %q", args)
		}
		target, err1 := strconv.Atoi(args[2])
		seed, err2 := strconv.ParseUint(args[3], 10, 64)
		rate, err3 := strconv.Atoi(args[4])
		if err := errors.Join(err1, err2, err3); err != nil {
			return true, fmt.Errorf("chaos: writer child: %w", err)
		}
		return true, runWriter(ctx, args[0], args[1], target, seed, rate)
	default:
		return true, fmt.Errorf("chaos: unknown child mode %s=%q", ChildEnv, mode)
	}
}

func runBroker(ctx context.Context, addr, store string) error {
	srv, err := natsembed.Start(natsembed.Options{Listen: addr, StoreDir: store, ServerName: "chaos-broker"})
	if err != nil {
		return fmt.Errorf("chaos: broker: %w", err)
	}
	fmt.Printf("broker ready %s\n", srv.ClientURL())
	<-ctx.Done()
	srv.Shutdown()
	return nil
}

// writerKeys is the number of distinct keys the writer touches: few enough
// that keys are overwritten and deleted often (versions matter), many
// enough that a node's state is not trivially small.
const writerKeys = 300

func runWriter(ctx context.Context, dbPath, artDir string, target int, seed uint64, rate int) error {
	db, err := node.OpenDB(ctx, dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	var store artifact.Store
	objects := strings.HasPrefix(artDir, "nats://")
	if objects {
		s, err := openObjects(ctx, artDir)
		if err != nil {
			return err
		}
		defer s.Close()
		store = s
	} else {
		s, err := filestore.New(artDir, nil)
		if err != nil {
			return err
		}
		store = s
	}
	// A restarted writer must not replay the same random choices.
	rng := rand.New(rand.NewPCG(seed, uint64(time.Now().UnixNano())))
	n, err := outboxCount(ctx, db)
	if err != nil {
		return err
	}
	var tick *time.Ticker
	if rate > 0 {
		tick = time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
	}
	for n < target {
		if tick != nil {
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
		} else if ctx.Err() != nil {
			return nil
		}
		key := fmt.Sprintf("k/%03d", rng.IntN(writerKeys))
		if rng.IntN(6) == 0 {
			_, existed, err := kv.Delete(ctx, db, key)
			if err != nil {
				return fmt.Errorf("chaos: writer: %w", err)
			}
			if existed {
				n++
			}
			continue
		}
		val := make([]byte, rng.IntN(200))
		for i := range val {
			val[i] = byte(rng.UintN(256))
		}
		if err := putRetry(ctx, db, store, key, val, objects); err != nil {
			return fmt.Errorf("chaos: writer: %w", err)
		}
		n++
	}
	return nil
}

// objectsPatience is how long the writer on the Object Store retries an
// unanswered broker in-process before it gives up (and exits, counted as a
// failed run): longer than most of the harness's broker outages, well
// shorter than a store-full episode, so that a bucket at its limit still
// ends writer runs.
const objectsPatience = 1500 * time.Millisecond

// openObjects opens the Object Store artifact store at url, retrying while
// the broker is down, as a producer application would.
func openObjects(ctx context.Context, url string) (*natsobject.Store, error) {
	for end := time.Now().Add(30 * time.Second); ; {
		s, err := natsobject.New(ctx, artifact.NATSConfig{URLs: strings.Split(url, ","), Create: true, Replicas: writerReplicas()}, nil)
		if err == nil {
			return s, nil
		}
		if time.Now().After(end) || ctx.Err() != nil {
			return nil, fmt.Errorf("chaos: writer: %w", err)
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

// uploadRetryLine starts the writer's log line for a failed Put it retries
// (storefull.go counts them).
const uploadRetryLine = "chaos: writer: put failed; retrying"

// putRetry is kv.Put; with the Object Store, a failed Put is retried for
// objectsPatience (each retry is a new transaction: a failed kv.Put commits
// nothing).
func putRetry(ctx context.Context, db *sql.DB, store artifact.Store, key string, val []byte, objects bool) error {
	end := time.Now().Add(objectsPatience)
	for {
		err := timedPut(ctx, db, store, key, val)
		if err == nil || !objects || time.Now().After(end) || ctx.Err() != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "%s: %v\n", uploadRetryLine, err)
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

func outboxCount(ctx context.Context, db *sql.DB) (int, error) {
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM controlfeed_outbox`).Scan(&n); err != nil {
		return 0, fmt.Errorf("chaos: count outbox: %w", err)
	}
	return n, nil
}
