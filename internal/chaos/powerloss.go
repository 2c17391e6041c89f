package chaos

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/controlfeed/controlfeed/internal/failpoint"
	"github.com/controlfeed/controlfeed/internal/node"
)

// Producer power loss. A real power loss keeps only what was fsynced; the
// suite cannot cut the power, so it restores a state a power loss could
// leave: the pump runs with outbox.after-sync=image(PATH), which writes a
// copy of the producer database after each fsync and before the publishes
// of the pass (see package failpoint). The episode SIGKILLs the writer and
// the pump, puts the last image in place of producer.db (its -wal and -shm
// removed), and lets both start again. Every event in the stream must then
// still be the producer's (check: "neither the producer nor the harness
// wrote"), the rows rolled back are simply never published, and the nodes
// must still end identical to the producer.

// powerLosses runs cfg.PowerLosses episodes spread over the first two
// thirds of the fault phase, while the writer still writes (a restored
// producer loses rows the writer then writes again).
func (h *harness) powerLosses(ctx context.Context, done <-chan struct{}) {
	h.episodes(ctx, done, h.cfg.PowerLosses, 2*h.cfg.Duration/3, func(e int) bool {
		if h.writer.finished() {
			return false
		}
		if err := h.powerLoss(ctx); err != nil {
			h.rep.problem("power loss %d: %v", e, err)
			return false
		}
		return true
	})
}

// powerLoss performs one episode.
func (h *harness) powerLoss(ctx context.Context) error {
	h.pumpMu.Lock() // not while a dropped or swapped injection holds the pump
	defer h.pumpMu.Unlock()
	image := h.producerDB + ".img"
	os.Remove(image)
	h.mu.Lock()
	h.pumpFP = failpoint.OutboxAfterSync + "=image(" + image + ")"
	h.mu.Unlock()
	h.pump.killAndWait() // restarts with the image point
	// Let the pump publish a few passes under it.
	imaged := waitFor(ctx, 30*time.Second, func() bool {
		_, err := os.Stat(image)
		return err == nil
	})
	if !imaged {
		h.clearPumpFP()
		h.logf("power loss: the pump wrote no image within 30s; episode void")
		return nil
	}
	sleepCtx(ctx, time.Duration(1000+h.intn(3000))*time.Millisecond)

	// The power goes: writer and pump die, the disk holds the image.
	h.writer.hold(true)
	h.pump.hold(true)
	h.writer.killAndWait()
	h.pump.killAndWait()
	h.clearPumpFP()
	before, _ := outboxCount(ctx, h.producer())
	if err := h.swapProducer(ctx, func() error {
		for _, s := range []string{"-wal", "-shm"} {
			if err := os.Remove(h.producerDB + s); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		return os.Rename(image, h.producerDB)
	}); err != nil {
		h.writer.hold(false)
		h.pump.hold(false)
		return err
	}
	after, err := outboxCount(ctx, h.producer())
	h.writer.hold(false)
	h.pump.hold(false)
	if err != nil {
		return fmt.Errorf("the restored producer database does not read: %w", err)
	}
	h.mu.Lock()
	h.rep.PowerLosses++
	h.rep.RolledBack += before - after
	h.mu.Unlock()
	h.logf("power loss: producer restored to its image after the pump's last fsync: %d outbox rows, %d rolled back", after, before-after)
	return nil
}

func (h *harness) clearPumpFP() {
	h.mu.Lock()
	h.pumpFP = ""
	h.mu.Unlock()
}

// producer returns the harness's handle on the producer database; it
// changes at a power loss (a caller holding the old one gets "database is
// closed" errors, which every reader tolerates).
func (h *harness) producer() *sql.DB {
	h.pdbMu.RLock()
	defer h.pdbMu.RUnlock()
	return h.pdb
}

// swapProducer closes the harness's producer handle, runs replace on the
// files, and opens the database again.
func (h *harness) swapProducer(ctx context.Context, replace func() error) error {
	h.pdbMu.Lock()
	defer h.pdbMu.Unlock()
	h.pdb.Close()
	rerr := replace()
	db, err := node.OpenDB(ctx, h.producerDB)
	if err != nil {
		return errors.Join(rerr, err)
	}
	h.pdb = db
	return rerr
}
