// Package agent is the running ssanet agent, the composition root of the reference model of
// X.1205 Supplement 20 clause 8 (Figure 8-1): it builds the libp2p host from the identity key
// in the agent's home, wires protocol, storage, discovery and policy together and owns the
// lifecycle of every goroutine it starts.
//
// The SSA negotiation point (negotiate.go) runs the stream protocol /ssanet/negotiate/1.0.0:
// every message is a length-prefixed signed envelope, checked against the authenticated remote
// peer, stepped through the pure protocol.Negotiation, persisted, and only then answered or
// sent ("persist first, then send"). The control API (control.go) lets the CLI drive the agent
// over a Unix socket in the home.
//
// The management point (exchange.go) translates each approved SSA into its SSP. On the
// provider, the enforcement point refines ingested records (ingest.go) and queues them
// durably; a delivery loop, running only while an SSA has records to send, delivers them in
// signed batches over /ssanet/exchange/1.0.0. The requester verifies each batch and record
// against the SSA, stores it exactly once, keeps the first violating batches as evidence,
// quarantines the records that break the SSA (kept and shown, never forwarded) and forwards
// the others to its sinks (sink.go); both sides monitor fulfilment (monitor.go).
//
// The agent never trusts a peer's bytes: sizes are capped before reading, buffers grow with
// what arrives, every read and write has a deadline, a peer's open negotiations are bounded,
// exchange streams are taken only from providers of an SSA in force, and a stream that
// misbehaves is reset while the agent goes on serving everyone else.
package agent
