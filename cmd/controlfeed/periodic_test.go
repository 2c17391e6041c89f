package main

import (
	"strings"
	"testing"
	"time"
)

func TestCadenceWarnings(t *testing.T) {
	day := 24 * time.Hour
	for _, tc := range []struct {
		name     string
		every    uint64
		interval time.Duration
		r        retention
		want     []string // one substring per expected warning
	}{
		{"Unbounded", 0, time.Hour, retention{}, nil},
		{"Good", 10000, time.Hour, retention{MaxAge: 7 * day, DuplicateWindow: day}, nil},
		{"IntervalBeyondMaxAge", 0, 8 * day, retention{MaxAge: 7 * day}, []string{"may find no snapshot within the retention"}},
		{"IntervalOverHalf", 0, 4 * day, retention{MaxAge: 7 * day}, []string{"more than half"}},
		{"EveryOnlyWithMaxAge", 1000, 0, retention{MaxAge: day}, []string{"age out before the next snapshot"}},
		{"BoundedNoSnapshots", 0, 0, retention{MaxAge: day}, []string{"no node takes periodic snapshots"}},
		{"SizeBoundIntervalOnly", 0, time.Hour, retention{MaxBytes: 1 << 30}, []string{"add --snapshot-every"}},
		{"DuplicateWindowOverMaxAge", 100, time.Minute, retention{MaxAge: time.Hour, DuplicateWindow: 2 * time.Hour}, []string{"JetStream refuses"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := cadenceWarnings(tc.every, tc.interval, tc.r)
			if len(got) != len(tc.want) {
				t.Fatalf("warnings = %q, want %d", got, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("warning %d = %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}

func TestServe_SnapshotFlagsNeedANode(t *testing.T) {
	_, _, err := run(t, nil, "", "serve", "--db", t.TempDir()+"/p.db", "--snapshot-every", "10")
	if err == nil || !isUsage(err) || !strings.Contains(err.Error(), "need a node") {
		t.Fatalf("serve --snapshot-every without a source = %v; want a usage error", err)
	}
}
