package applier_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/internal/failpoint"
	"github.com/controlfeed/controlfeed/internal/failpoint/failpointtest"
	"github.com/controlfeed/controlfeed/internal/sqlitedb"
)

// childDBEnv, when set, makes TestFailpointChild act as the child process of
// a kill test: it applies evs(1, 3) to the database at that path, with
// whatever CONTROLFEED_FAILPOINTS the parent set.
const childDBEnv = "APPLIER_FAILPOINT_CHILD_DB"

func TestFailpointChild(t *testing.T) {
	path := os.Getenv(childDBEnv)
	if path == "" {
		t.Skip("only runs as the child of a failpoint kill test")
	}
	ctx := context.Background()
	db, err := sqlitedb.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	src := &FakeSource{}
	src.AckFunc = func(_ context.Context, id string) error {
		fmt.Printf("ACK %s\n", id)
		return nil
	}
	src.Add(evs(1, 3, typ)...)
	a := newApplier(t, db, src, nil, newInsertHandler(), nil)
	n, err := a.Step(ctx)
	fmt.Printf(failpointtest.Survived+" Step = %d, %v\n", n, err)
}

// runChild applies evs(1, 3) to the database at path in a child process with
// spec enabled, and requires that the failure point killed it.
func runChild(t *testing.T, path, spec string) {
	t.Helper()
	out := failpointtest.RunKilledChild(t, "TestFailpointChild", spec, childDBEnv+"="+path)
	if strings.Contains(out, "ACK") {
		t.Fatalf("child acknowledged before the failure point killed it: %q", out)
	}
}

func enableFailpoints(t *testing.T, spec string) {
	t.Helper()
	if err := failpoint.Enable(spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(failpoint.Disable)
}

// waitFor polls cond; the deadline only guards against a hang.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// A failing commit (the disk is full) is a failed batch: nothing is
// committed, the applier is unavailable (not halted: nothing persisted,
// nothing to skip) and retries, and it resumes by itself once the fault is
// gone.
func TestFailpoint_BeforeCommitENOSPC(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	src := &FakeSource{}
	src.Add(evs(1, 3, typ)...)
	h := newInsertHandler()
	a := newApplier(t, db, src, nil, h, func(c *applier.Config) {
		c.PollInterval = time.Millisecond
		c.MinBackoff, c.MaxBackoff = time.Millisecond, 4*time.Millisecond
	})
	enableFailpoints(t, failpoint.ApplierBeforeCommit+"=enospc")

	n, err := a.Step(ctx)
	if n != 0 || !errors.Is(err, applier.ErrUnavailable) || errors.Is(err, applier.ErrHalted) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Step = %d, %v; want 0 and ErrUnavailable wrapping ENOSPC", n, err)
	}
	st := a.Status()
	if u := st.Unavailable; st.State != applier.StateUnavailable || u == nil || u.Op != applier.OpCommit || u.EventID != "evt-1" ||
		!strings.Contains(u.Error, "no space left on device") || st.Halted != nil || st.Cursor != 0 || st.Applied != 0 {
		t.Fatalf("Status = %+v (Unavailable %+v); want unavailable at evt-1 with the ENOSPC error, nothing applied", st, st.Unavailable)
	}
	if c := cursorOf(t, db); c != 0 {
		t.Fatalf("cursor = %d, want 0", c)
	}
	if got := rowCount(t, db, `SELECT COUNT(*) FROM controlfeed_applied_events`); got != 0 {
		t.Fatalf("%d applied_events rows committed", got)
	}
	if got := rowCount(t, db, `SELECT COUNT(*) FROM t`); got != 0 {
		t.Fatalf("%d data rows committed", got)
	}
	if acks, _ := src.recorded(); len(acks) != 0 {
		t.Fatalf("acked %v before any commit", acks)
	}
	stored, err := applier.ReadStatus(ctx, db)
	if err != nil || stored.Halted != nil {
		t.Fatalf("ReadStatus = %+v, %v; want no halt persisted", stored, err)
	}

	// Run keeps retrying while the disk is "full"...
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	waitFor(t, "Run to retry the failed batch", func() bool {
		u := a.Status().Unavailable
		return u != nil && u.Attempts >= 3
	})
	if c := cursorOf(t, db); c != 0 {
		t.Fatalf("cursor moved to %d while commits fail", c)
	}
	// ...and converges by itself once it is not.
	failpoint.Disable()
	waitFor(t, "Run to converge", func() bool { return a.Status().Cursor == 3 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if st := a.Status(); st.Halted != nil || st.Unavailable != nil || st.State != applier.StateApplying || st.Applied != 3 {
		t.Fatalf("Status = %+v; want 3 applied, applying", st)
	}
	if got := rowCount(t, db, `SELECT COUNT(*) FROM t`); got != 3 {
		t.Fatalf("data rows = %d, want 3", got)
	}
	if stored, err := applier.ReadStatus(ctx, db); err != nil || stored.Halted != nil || stored.Applied != 3 {
		t.Fatalf("ReadStatus = %+v, %v", stored, err)
	}
	if acks, _ := src.recorded(); !slices.Equal(acks, []string{"evt-1", "evt-2", "evt-3"}) {
		t.Fatalf("acks %v", acks)
	}
}

// An error inside a catch-up batch fails the transaction as a whole.
func TestFailpoint_MidBatchError(t *testing.T) {
	ctx := context.Background()
	db, _ := openDB(t)
	src := &FakeSource{}
	src.Add(evs(1, 3, typ)...)
	a := newApplier(t, db, src, nil, newInsertHandler(), nil)
	enableFailpoints(t, failpoint.ApplierMidBatch+"=1*error")
	if n, err := a.Step(ctx); n != 0 || !errors.Is(err, failpoint.ErrInjected) || !errors.Is(err, applier.ErrUnavailable) {
		t.Fatalf("Step = %d, %v; want ErrUnavailable wrapping the injected error", n, err)
	}
	if c, rows := cursorOf(t, db), rowCount(t, db, `SELECT COUNT(*) FROM t`); c != 0 || rows != 0 {
		t.Fatalf("cursor %d, %d data rows after a failed batch; want nothing", c, rows)
	}
	if n, err := a.Step(ctx); n != 3 || err != nil {
		t.Fatalf("retry Step = %d, %v; want 3, nil", n, err)
	}
}

// A kill inside a catch-up transaction loses the whole batch, not a prefix.
func TestFailpoint_MidBatchKill(t *testing.T) {
	db, path := openDB(t)
	runChild(t, path, failpoint.ApplierMidBatch+"=exit")
	if c := cursorOf(t, db); c != 0 {
		t.Fatalf("cursor = %d after the kill, want 0", c)
	}
	if a, d := rowCount(t, db, `SELECT COUNT(*) FROM controlfeed_applied_events`), rowCount(t, db, `SELECT COUNT(*) FROM t`); a != 0 || d != 0 {
		t.Fatalf("%d applied_events and %d data rows survived the kill; want none", a, d)
	}
	src := &FakeSource{}
	src.Add(evs(1, 3, typ)...)
	a := newApplier(t, db, src, nil, newInsertHandler(), nil)
	if n, err := a.Step(context.Background()); n != 3 || err != nil {
		t.Fatalf("Step after restart = %d, %v; want 3, nil", n, err)
	}
}

// A kill between commit and ack: after restart the events are recorded
// once, and their redelivery is a no-op that gets them acked.
func TestFailpoint_AfterCommitBeforeAckKill(t *testing.T) {
	ctx := context.Background()
	db, path := openDB(t)
	runChild(t, path, failpoint.ApplierAfterCommitBeforeAck+"=exit")
	if c := cursorOf(t, db); c != 3 {
		t.Fatalf("cursor = %d after the kill, want 3 (the batch committed)", c)
	}
	for i := 1; i <= 3; i++ {
		if got := rowCount(t, db, `SELECT COUNT(*) FROM controlfeed_applied_events WHERE event_id = ?`, fmt.Sprintf("evt-%d", i)); got != 1 {
			t.Fatalf("evt-%d recorded %d times, want once", i, got)
		}
	}

	// The restarted node: the broker redelivers everything unacked,
	// whatever the cursor.
	src := &FakeSource{}
	src.Add(evs(1, 3, typ)...)
	src.PollFunc = func(context.Context, uint64) ([]controlevent.Event, error) { return src.after(0), nil }
	h := newInsertHandler()
	a := newApplier(t, db, src, nil, h, nil)
	if n, err := a.Step(ctx); n != 0 || err != nil {
		t.Fatalf("Step on redelivery = %d, %v; want 0, nil", n, err)
	}
	for i := 1; i <= 3; i++ {
		if c := h.count(fmt.Sprintf("evt-%d", i)); c != 0 {
			t.Fatalf("handler ran %d times for redelivered evt-%d", c, i)
		}
	}
	if st := a.Status(); st.Applied != 0 || st.Halted != nil || st.Cursor != 3 {
		t.Fatalf("Status = %+v", st)
	}
	if acks, _ := src.recorded(); !slices.Equal(acks, []string{"evt-1", "evt-2", "evt-3"}) {
		t.Fatalf("acks %v; want the redelivered events acked", acks)
	}
	if a, d := rowCount(t, db, `SELECT COUNT(*) FROM controlfeed_applied_events`), rowCount(t, db, `SELECT COUNT(*) FROM t`); a != 3 || d != 3 {
		t.Fatalf("%d applied_events and %d data rows, want 3 and 3", a, d)
	}
}
