//go:build race

package e2e

// raceEnabled: under -race the daemons run a binary built with -race too, so that a data race
// in a running agent fails the test (the daemon then exits 66 instead of 0 on SIGTERM).
const raceEnabled = true
