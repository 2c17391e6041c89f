//go:build race

package snapshot_test

// raceEnabled: the race detector slows SQLite (translated C) many times
// over, so the heavy tests shrink their databases.
const raceEnabled = true
