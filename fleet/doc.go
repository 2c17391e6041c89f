// Package fleet lets every node of a controlfeed fleet describe itself where
// the whole fleet can be read: each node runs a Reporter that writes its
// Report (position, health, state digest) to a Store, and "controlfeed
// fleet" (or any program) lists the Store and derives one Row per node with
// View.
//
// The package holds the Report format, the Store seam with its registry (in
// the style of package feed: one backend per feed kind, registered under the
// feed backend's name and activated by a blank import), the Reporter, and
// the pure functions that turn reports into a fleet view. Backends:
// fleet/filefleet ("file": one JSON file per node in FEED_DIR/.nodes) and
// fleet/natsfleet ("jetstream": one key per node in a key/value bucket).
//
// # Report format (version 1)
//
// A report is one JSON object (snake_case keys, see Report):
//
//	{"format":1,"node":"edge-7","version":"v0.4.0","started_at":"...",
//	 "reported_at":"...","seq":12,"state":"applying","cursor":4211,
//	 "head":4211,"lag":0,"applied":4200,"skipped":1,
//	 "halted":null,"unavailable":null,"problem":"",
//	 "state_digest":{"cursor":4211,"digest":"sha256:..."},
//	 "digest_checkpoints":[{"cursor":4201,"digest":"sha256:..."}, ...],
//	 "app_digest":{"cursor":4211,"digest":"sha256:...","at":"..."},
//	 "recent_skipped":[{"event_id":"...","control_version":17}]}
//
// Readers ignore unknown keys and refuse another "format". Everything in a
// report is derived from the node's own database and its live applier
// state, so a report can be lost, re-sent or overwritten without harm: the
// next one replaces it. A report is at most MaxReportBytes.
//
// # When nodes report
//
// A Reporter looks at its node every Config.Debounce (default 1 s) and
// writes a report when something that matters changed (cursor, state, halt,
// unavailability, digest) and at least every Config.Heartbeat (default
// 10 s) regardless. It reads a snapshot of the node's state; it never runs
// on, or waits for, the apply path. A failed write is logged and retried at
// the next look.
//
// # Staleness
//
// A Store's List returns, with each report, when the store received it
// (Entry.SeenAt: the broker's time on JetStream, the file's modification
// time on the file feed), so a reader's view of a silent node does not
// depend on that node's clock. A node whose last report is older than the
// reader's stale threshold is "stale" (stopped, partitioned, or its
// reporter failing); "controlfeed fleet forget NODE" removes a
// decommissioned node's report.
//
// # Errors
//
// Errors begin with "fleet:" (or the backend's name) and the operation;
// ErrNoStore and ErrNotFound are the sentinels.
package fleet
