//go:build stress

package filesource_test

// stressTrials is the number of trials of TestRestartStress with -tags
// stress.
const stressTrials = 300
