package main

import (
	"strings"
	"testing"
)

func TestDemo(t *testing.T) {
	for _, f := range []string{"file", "jetstream"} {
		t.Run(f, func(t *testing.T) {
			out, errOut, err := run(t, nil, "", "demo", "--nodes", "2", "--events", "30", "--feed", f)
			if err != nil {
				t.Fatalf("demo: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if last := lines[len(lines)-1]; !strings.HasPrefix(last, "PASS: 2 nodes identical to the producer (digest ") ||
				!strings.HasSuffix(last, "30 events applied once each") {
				t.Errorf("verdict %q", last)
			}
			if !strings.Contains(out, "latency:  producer commit -> committed on a node, 60 samples: p50 ") {
				t.Errorf("no latency line:\n%s", out)
			}
		})
	}
}

func TestDemo_UsageErrors(t *testing.T) {
	for _, args := range [][]string{{"--feed", "kafka"}, {"--nodes", "0"}, {"--events", "-1"}, {"extra"}} {
		_, _, err := run(t, nil, "", append([]string{"demo"}, args...)...)
		if err == nil || !isUsage(err) {
			t.Errorf("demo %q: %v, want a usage error", args, err)
		}
	}
}
