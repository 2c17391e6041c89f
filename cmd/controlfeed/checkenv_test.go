package main

import "testing"

// TestCheckEnv_TestVariables: the test suites' variables (CI exports
// CONTROLFEED_TEST_POSTGRES_URL and CONTROLFEED_CHAOS_*) reach the
// controlfeed processes the end-to-end tests start and are accepted; any
// other unknown CONTROLFEED_* variable is still refused.
func TestCheckEnv_TestVariables(t *testing.T) {
	if err := checkEnv([]string{"CONTROLFEED_TEST_POSTGRES_URL=postgres://x@/y", "CONTROLFEED_CHAOS_REPORT=/tmp/r", "HOME=/root"}); err != nil {
		t.Fatalf("checkEnv refused the test suites' variables: %v", err)
	}
	if err := checkEnv([]string{"CONTROLFEED_FEED_SINKK=file"}); err == nil {
		t.Fatal("checkEnv accepted an unknown CONTROLFEED_ variable")
	}
}
