package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/internal/node"
)

var statusCmd = &command{
	name:    "status",
	summary: "show a node's cursor, halt, applied counts and outbox counts",
	details: `Reads the database --db (from any process, also while "serve" runs on it)
and prints the node's cursor (the last ControlVersion applied), the event the
applier is halted at with its error, if any, the applied and skipped event
counts, and the producer outbox's pending and dead row counts. With --json it
prints one object with the keys cursor, state ("halted" or absent), halted,
applied, skipped, outbox_pending, outbox_dead (and head, lag: null here; a
running node's /v1/status fills them).

Only a halt (an event that cannot be applied) is stored in the database. A
node that is unavailable (its feed, artifact store or database failing) or
faces a gap in the feed stores nothing: those states, with their own keys
state, unavailable and gap, are in the running node's GET /v1/status. The
exit status is 0 whatever the node's state; use serve's /healthz for
alerting.

On a PostgreSQL producer database (--db postgres://...) it prints the
outbox counts and which serve process holds the drainer lock and publishes
(JSON key pump_holder: its server pid, application_name, client address and
since when); the others stand by.` + postgresHelp,
	example:  `controlfeed status --db node1.db --json`,
	settings: []string{"db", "json", "log-format", "log-level"},
	override: readOnlyDB,
}

func (m *Main) runStatus(ctx context.Context, args []string) error {
	var s settings
	db, _, err := m.openReadOnlyArgs(ctx, statusCmd, &s, args, 0, 0)
	if err != nil {
		return helpOK(err)
	}
	defer db.Close()
	st, err := node.ReadStatus(ctx, db)
	if err != nil {
		return err
	}
	if s.JSON {
		enc := json.NewEncoder(m.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	w := m.Stdout
	if node.IsPostgresURL(s.DB) {
		printPostgresStatus(w, st)
		return nil
	}
	fmt.Fprintf(w, "cursor:          %d\n", st.Cursor)
	fmt.Fprintf(w, "applied:         %d\n", st.Applied)
	fmt.Fprintf(w, "skipped:         %d\n", st.Skipped)
	fmt.Fprintf(w, "state digest:    %s (at cursor %d)\n", st.StateDigest.Digest, st.StateDigest.Cursor)
	if h := st.Halted; h != nil {
		fmt.Fprintf(w, "halted:          event %s (control_version %d, type %s) after %d attempts since %s\n",
			h.EventID, h.ControlVersion, h.Type, h.Attempts, h.Since.Format(time.RFC3339))
		if h.Security != "" {
			fmt.Fprintf(w, "SECURITY HALT:   %s: the event failed verification and was not applied; find out who wrote it (docs/SECURITY.md); only skip --security-override passes it\n", h.Security)
		}
		fmt.Fprintf(w, "halt error:      %s\n", h.Error)
		fmt.Fprintf(w, "                 %s\n", haltAdvice(h, s.DB))
	} else {
		fmt.Fprintf(w, "halted:          no (unavailability and gaps are not stored: see the running node's GET /v1/status)\n")
	}
	fmt.Fprintf(w, "outbox pending:  %d\n", st.OutboxPending)
	if st.OutboxOldestPending != nil {
		fmt.Fprintf(w, "oldest pending:  %s\n", st.OutboxOldestPending.Format(time.RFC3339))
	}
	fmt.Fprintf(w, "outbox dead:     %d\n", st.OutboxDead)
	return nil
}

// haltAdvice is what status tells the operator to do about halt h. A skip
// passes over the event for good, so the node no longer equals its
// producer: it is offered only when the event itself is at fault (for a
// security halt, only as the explicit override, after the runbook), not when
// the node cannot read a payload the producer stored (its artifact store
// settings or its --max-artifact-bytes differ from the producer's), which
// is fixed in the node's configuration. Only the
// error text is stored, so the causes are told apart by the artifact
// package's sentinel messages, which the stored error wraps.
func haltAdvice(h *node.Halt, db string) string {
	switch {
	case h.Security != "":
		return fmt.Sprintf("the event failed verification (%s) and may be forged: do not skip it before finding out who wrote it "+
			"(docs/SECURITY.md, \"Operator runbook: a security halt\"); a plain skip refuses it, the explicit override is "+
			"controlfeed skip --db %s --security-override %s", h.Security, db, h.EventID)
	case strings.Contains(h.Error, artifact.ErrNotFound.Error()):
		return "this node's artifact store does not hold the event's payload: check that serve's --artifact-store and " +
			"--artifact-dir (or --nats-url/--nats-bucket) are the producer's, and restart the node with them: it then applies the event. " +
			"Do not skip: the node would miss the change"
	case strings.Contains(h.Error, artifact.ErrTooLarge.Error()):
		return "the event's payload is larger than this node's --max-artifact-bytes: give the node the producer's " +
			"value and restart it: it then applies the event. Do not skip: the node would miss the change"
	}
	return fmt.Sprintf("fix the cause, or pass over it: controlfeed skip --db %s %s", db, h.EventID)
}
