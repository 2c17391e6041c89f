package chaos

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/controlfeed/controlfeed/internal/failpoint"
)

// The artifact store at its byte limit. The suite's artifact store is the
// file store; when the suite can mount a tmpfs it keeps the store on one
// whose size limit it lowers, during an episode, to what the store already
// uses: every upload of the writer then fails with a real ENOSPC (in the
// temp file's write or fsync), as an upload into a bucket at its byte limit
// fails, while the nodes keep reading the objects already there. Without a
// tmpfs the writer restarts with filestore.mid-write=enospc instead. An
// upload that failed must leave no event behind (the writer's transaction
// never commits), and once the space is back the writer goes on; the
// checker's "halts without a bad input" and state comparison catch any
// event that references an object that was not stored whole.

// storeFullEpisode is how long the store stays full.
const storeFullEpisode = 4 * time.Second

// mountArtifactTmpfs mounts a tmpfs over the (still empty) artifact
// directory, sized for the run's events; false if it cannot.
func (h *harness) mountArtifactTmpfs() bool {
	h.artSize = int64(h.cfg.Events)*8<<10 + 64<<20 // a page per object and margin: a limit, not an allocation
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", h.artSize), "tmpfs", h.artDir).CombinedOutput()
	if err != nil {
		h.logf("cannot mount a tmpfs for the artifact store (%v: %s); the store-full episodes use the %s=enospc failure point", err, strings.TrimSpace(string(out)), failpoint.FilestoreMidWrite)
		return false
	}
	h.artTmpfs = true
	return true
}

// storeFulls runs cfg.StoreFulls episodes spread over the fault phase.
func (h *harness) storeFulls(ctx context.Context, done <-chan struct{}) {
	h.episodes(ctx, done, h.cfg.StoreFulls, 2*h.cfg.Duration/3, func(e int) bool {
		if h.writer.finished() {
			return false
		}
		h.storeFull(ctx, e)
		return true
	})
}

func (h *harness) storeFull(ctx context.Context, e int) {
	// The harness's own puts (bad-input artifacts, repairs) wait.
	h.storeMu.Lock()
	defer h.storeMu.Unlock()
	before, _ := outboxCount(ctx, h.producer())
	how := "tmpfs at its size limit"
	if h.obj != nil {
		how = "bucket at its byte limit"
		if err := h.setBucketLimit(ctx, true); err != nil {
			h.rep.problem("store full %d: set the bucket's byte limit: %v", e, err)
			return
		}
	} else if h.artTmpfs {
		var st syscall.Statfs_t
		if err := syscall.Statfs(h.artDir, &st); err != nil {
			h.rep.problem("store full %d: statfs %s: %v", e, h.artDir, err)
			return
		}
		used := int64(st.Blocks-st.Bfree) * st.Bsize
		if err := h.remountArtifacts(used + 64<<10); err != nil {
			h.rep.problem("store full %d: %v", e, err)
			return
		}
	} else {
		how = "failure point " + failpoint.FilestoreMidWrite + "=enospc"
		h.mu.Lock()
		h.writerFP = failpoint.FilestoreMidWrite + "=enospc"
		h.mu.Unlock()
		h.writer.killAndWait() // restarts with the point
	}
	failures0, retries0 := h.writerFailures(), h.writerRetries()
	sleepCtx(ctx, storeFullEpisode)
	failures, retries := h.writerFailures()-failures0, h.writerRetries()-retries0
	if h.obj != nil {
		if err := h.setBucketLimit(ctx, false); err != nil {
			h.rep.problem("store full %d: lift the bucket's byte limit: %v", e, err)
		}
	} else if h.artTmpfs {
		if err := h.remountArtifacts(h.artSize); err != nil {
			h.rep.problem("store full %d: give the space back: %v", e, err)
		}
	} else {
		h.mu.Lock()
		h.writerFP = ""
		h.mu.Unlock()
		h.writer.killAndWait()
	}
	after, _ := outboxCount(ctx, h.producer())
	h.mu.Lock()
	h.rep.StoreFulls++
	h.rep.StoreFullFailures += failures
	h.rep.StoreFullRetries += retries
	h.mu.Unlock()
	h.logf("store full %d (%s) for %v: %d failed writer starts, %d failed Puts retried, outbox %d -> %d", e, how, storeFullEpisode, failures, retries, before, after)
}

// writerRetries is the number of failed Puts the writer retried in-process
// so far (the Object Store run's writer; see putRetry).
func (h *harness) writerRetries() int {
	b, err := os.ReadFile(h.writer.logf)
	if err != nil {
		return 0
	}
	return bytes.Count(b, []byte(uploadRetryLine))
}

// writerFailures is the number of writer exits with an error so far (a
// failed upload ends the writer with one).
func (h *harness) writerFailures() int {
	_, bad, _ := h.writer.stats()
	return bad
}

func (h *harness) remountArtifacts(size int64) error {
	out, err := exec.Command("mount", "-o", fmt.Sprintf("remount,size=%d", size), h.artDir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("remount the artifact tmpfs with size %d: %v: %s", size, err, strings.TrimSpace(string(out)))
	}
	return nil
}
