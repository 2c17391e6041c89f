package applier

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/controlevent"
	"github.com/controlfeed/controlfeed/feed"
)

// codeErr stands in for a SQLite driver error (modernc's *sqlite.Error has
// Code() int).
type codeErr int

func (c codeErr) Error() string { return fmt.Sprintf("sqlite error (%d)", int(c)) }
func (c codeErr) Code() int     { return int(c) }

func TestClassify(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("applier: something: %w", err) }
	for _, tc := range []struct {
		name string
		op   string
		err  error
		want State
	}{
		{"InvalidEvent", opValidate, wrap(controlevent.ErrInvalid), StateHalted},
		{"NoHandler", opHandler, errors.New("no handler for event type \"x\""), StateHalted},
		{"HandlerError", OpApply, errors.New("tenant quota exceeded"), StateHalted},
		{"HandlerConstraint", OpApply, wrap(codeErr(2067)), StateHalted}, // SQLITE_CONSTRAINT_UNIQUE
		{"Conflict", OpApply, wrap(&ConflictError{EventID: "e"}), StateHalted},
		{"HandlerFull", OpApply, wrap(codeErr(sqliteFull)), StateUnavailable},
		{"HandlerBusy", OpApply, wrap(codeErr(sqliteBusy)), StateUnavailable},
		{"HandlerBusySnapshot", OpApply, wrap(codeErr(517)), StateUnavailable}, // SQLITE_BUSY_SNAPSHOT
		{"HandlerLocked", OpApply, wrap(codeErr(sqliteLocked)), StateUnavailable},
		{"HandlerIOErr", OpApply, wrap(codeErr(266)), StateUnavailable}, // SQLITE_IOERR_READ
		{"HandlerENOSPC", OpApply, wrap(syscall.ENOSPC), StateUnavailable},
		{"HandlerDeadline", OpApply, wrap(context.DeadlineExceeded), StateUnavailable},
		{"CommitENOSPC", OpCommit, wrap(syscall.ENOSPC), StateUnavailable},
		{"CommitUnknown", OpCommit, errors.New("something odd"), StateUnavailable},
		// sqlitedb.ErrWriteLockTimeout at BEGIN: the applier does not link
		// sqlitedb; a failed BEGIN is a whole-transaction failure.
		{"BeginWriteLockTimeout", OpCommit, wrap(errors.New("sqlitedb: begin write transaction on n.db: waited 10s: write lock held by another transaction of this process")), StateUnavailable},
		{"CommitDeferredFK", OpCommit, wrap(codeErr(787)), StateHalted}, // SQLITE_CONSTRAINT_FOREIGNKEY
		{"ReadDB", OpReadDB, wrap(codeErr(sqliteBusy)), StateUnavailable},
		{"FetchNotFound", OpFetch, wrap(artifact.ErrNotFound), StateHalted},
		{"FetchCorrupt", OpFetch, wrap(artifact.ErrCorrupt), StateHalted},
		{"FetchTooLarge", OpFetch, wrap(artifact.ErrTooLarge), StateHalted},
		{"FetchBadRef", OpFetch, wrap(artifact.ErrBadRef), StateHalted},
		{"FetchChecksum", OpFetch, wrap(controlevent.ErrChecksumMismatch), StateHalted},
		{"FetchNoStore", OpFetch, wrap(errNoStore), StateHalted},
		{"FetchDeadline", OpFetch, wrap(context.DeadlineExceeded), StateUnavailable},
		{"FetchUnavailable", OpFetch, wrap(feed.ErrUnavailable), StateUnavailable},
		{"FetchNATSTimeout", OpFetch, errors.New("nats: timeout"), StateUnavailable},
		{"FetchConnRefused", OpFetch, wrap(&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}), StateUnavailable},
		{"PollError", OpPoll, errors.New("permission denied"), StateUnavailable},
		{"PollBehind", OpPoll, wrap(&feed.CursorBehindError{}), StateBehindRetention},
		{"PollGap", OpPoll, wrap(&feed.GapError{}), StateGap},
		{"CheckGapGap", OpCheckGap, wrap(&feed.GapError{}), StateGap},
		{"CheckGapCannotTell", OpCheckGap, wrap(context.DeadlineExceeded), StateUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := classify(tc.op, tc.err); got != tc.want {
				t.Errorf("classify(%s, %v) = %v, want %v", tc.op, tc.err, got, tc.want)
			}
		})
	}
}
