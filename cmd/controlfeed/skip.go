package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/controlfeed/controlfeed/applier"
	"github.com/controlfeed/controlfeed/internal/node"
)

var skipCmd = &command{
	name:    "skip",
	args:    "EVENT_ID",
	summary: "pass over the event a node's applier is halted at",
	details: `Records the event EVENT_ID, which the applier of --db is halted at, as
skipped in applied_events. A running "serve" on that database moves past it
at its next retry; its effect is never applied on this node, so the node may
now differ from the producer: use it only when you have decided the event
must not apply (see "controlfeed status" for the halt and its error).

It refuses unless the node is halted on EVENT_ID, naming the event it is
halted on, or saying that it is not halted. A node that is unavailable (its
feed, artifact store or database failing) or faces a gap in the feed is not
halted: nothing is wrong with an event, it retries by itself, and there is
nothing to skip.

A security halt (the event failed signature or chain verification: status
shows "security") is refused unless --security-override is given: the event
may be forged, so find out who wrote it first (docs/SECURITY.md). The
override is logged and records the event as skipped, never applied.`,
	example:  `controlfeed skip --db node1.db 0190f5a2-6c1e-7b3a-9a51-2f7d4c8e9b10`,
	settings: []string{"db", "security-override", "log-format", "log-level"},
	override: map[string]flagHelp{
		"db": {usage: "SQLite database `FILE` of the halted node; must exist, and is written only to record the skip (never created or migrated)"},
	},
}

func (m *Main) runSkip(ctx context.Context, args []string) error {
	var s settings
	ro, pos, err := m.openReadOnlyArgs(ctx, skipCmd, &s, args, 1, 1)
	if err != nil {
		return helpOK(err)
	}
	defer ro.Close()
	id := pos[0]
	before, err := node.ReadStatus(ctx, ro)
	if err != nil {
		return err
	}
	if h := before.Halted; h == nil || h.EventID != id {
		// Not halted at id: Skip refuses, reading only, which is all it
		// can do on the read-only handle. Should the node have halted at
		// id meanwhile, Skip fails to write there and we go on below.
		if err := applier.Skip(ctx, ro, id); errors.Is(err, applier.ErrNotHalted) {
			return err
		}
	}
	ro.Close()
	db, err := node.OpenDB(ctx, s.DB)
	if err != nil {
		return err
	}
	defer db.Close()
	if s.SecurityOverride {
		log, err := s.logger(m.Stderr)
		if err != nil {
			return err
		}
		if h := before.Halted; h != nil && h.EventID == id && h.Security != "" {
			log.Warn("security override: passing an event that failed verification; it is recorded as skipped, never applied",
				"event_id", id, "control_version", h.ControlVersion, "security", h.Security, "db", s.DB)
		}
		if err := applier.SkipSecurityHalt(ctx, db, id); err != nil {
			return err
		}
	} else if err := applier.Skip(ctx, db, id); err != nil {
		return err
	}
	if h := before.Halted; h != nil && h.EventID == id {
		fmt.Fprintf(m.Stdout, "skipped event %s (control_version %d, type %s), halted since %s with: %s\n",
			h.EventID, h.ControlVersion, h.Type, h.Since.Format("2006-01-02T15:04:05Z07:00"), h.Error)
	} else {
		fmt.Fprintf(m.Stdout, "skipped event %s\n", id)
	}
	return nil
}
