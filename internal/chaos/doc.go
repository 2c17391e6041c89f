// Package chaos is controlfeed's crash, outage, duplicate and bad-input
// suite: Run starts a NATS broker, a writer, a pump and the nodes as OS
// processes (the controlfeed binary and a child program that calls
// MaybeChild), SIGKILLs and restarts them at random and at named failure
// points, restarts the broker, forces duplicate deliveries and feeds bad
// inputs for Config's duration, then checks that nothing was lost, applied
// twice or out of order and that every node equals the producer. The
// Report holds the counts and the verdict.
//
// The test in this package runs a CI-sized version; the command
// cmd/controlfeed-chaos runs it by hand for any length. docs/RELIABILITY.md
// describes the fault model and the figures of the last run.
package chaos
