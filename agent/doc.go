// Package agent is the running ssanet agent, the composition root of the reference model of
// X.1205 Supplement 20 clause 8 (Figure 8-1): it builds the libp2p host from the identity key
// in the agent's home, wires protocol, storage (and later discovery and policy) together and
// owns the lifecycle of every goroutine it starts.
//
// The SSA negotiation point (negotiate.go) runs the stream protocol /ssanet/negotiate/1.0.0:
// every message is a length-prefixed signed envelope, checked against the authenticated remote
// peer, stepped through the pure protocol.Negotiation, persisted, and only then answered or
// sent ("persist first, then send"). The control API (control.go) lets the CLI drive the agent
// over a Unix socket in the home.
//
// The agent never trusts a peer's bytes: sizes are capped before reading, every read and
// write has a deadline, and a stream that misbehaves is reset while the agent goes on serving
// everyone else.
package agent
