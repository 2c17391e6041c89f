//go:build !stress

package filesource_test

// stressTrials is the number of trials of TestRestartStress in the default
// run; build with -tags stress (or set FILESOURCE_STRESS_TRIALS) for the long
// version.
const stressTrials = 2
