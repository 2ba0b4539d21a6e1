// Package agent is the running ssanet agent, the composition root of the reference model of
// X.1205 Supplement 20 clause 8 (Figure 8-1): it builds the libp2p host from the identity key
// in the agent's home, wires protocol, storage, discovery and policy together and owns the
// lifecycle of every goroutine it starts. The host's reachability behind NAT (AutoNAT, circuit
// relay v2 client and allow-listed service, DCUtR hole punching) is in reach.go.
//
// The SSA negotiation point (the negotiator: negotiate*.go, session.go, admission.go,
// negotiation.go) runs the stream protocol /ssanet/negotiate/1.0.0: every message is a
// length-prefixed signed envelope, checked against the authenticated remote peer, stepped
// through the pure protocol.Negotiation, persisted, and only then answered or sent ("persist
// first, then send"). A message that cannot be delivered says why (dialerr.go): a peer whose
// allow-list refuses this agent, or that does not speak the protocol, ends a request at once;
// one unreachable or silent is tried again. The control API (control.go) lets the CLI drive
// the agent over a Unix socket in the home: it is a thin adapter over the Agent's exported
// methods (api.go, negotiation.go, peers.go), which `ssanet demo` calls too. The status snapshot
// (status.go: peers, agreements with their verdict, flows, sinks) is served there and, without
// peers' addresses, as a read-only page on the metrics address (statuspage.go).
//
// A negotiation is not driven by a goroutine of its own, as the house style has it, but by
// whichever goroutine has something for it, under the negotiation's lock (session.mu): the
// stream handler with a peer's message, a delivery with the peer's answer on our own stream,
// the resend loop with a tick that expires a request, proposal or revision, an operator's
// Request, Decide, Cancel or Revise. Only a holder of the session (from the session cache) that holds its lock may
// step it, and the lock is held from the step through its commit or rollback: steps are
// applied one at a time, and whoever takes the lock next finds the state the store holds,
// never one that failed to persist. Persisting before sending holds because step returns the
// message to send only once the store has it, and the caller sends it after letting go of the
// lock; the resend loop only ever sends the last message of the transcript the store holds.
// No I/O with a peer happens under the lock, so a silent peer holds up only the deliveries to
// itself; the lock is taken before the cache's, admission's or the negotiator's own locks,
// never after, so they cannot deadlock. A goroutine per negotiation would give the same
// order at a higher price: a message must be answered on the stream it came on, by the
// handler that owns that stream, so each message would need a mailbox and a reply channel;
// and nearly every negotiation is at rest, so the goroutines would be started and stopped
// around single messages by a registry that is the session cache again, plus channels.
//
// The SSA management point (manager.go, type manager) translates each approved SSA into its
// SSP and keeps the runs in force (run.go); monitoring and assessment (monitor.go, assess.go)
// are its part too. The SSP enforcement points use the runs: on the provider, the sources of
// raw records (ingest.go, follow.go) feed refine-and-queue (refine.go), which refines them
// and queues them durably; delivery (delivery.go), running only while an SSA has records to
// send, delivers them in signed batches over /ssanet/exchange/1.0.0. On the requester,
// receive-and-verify (receive.go) verifies each batch and record against the SSA, stores it
// exactly once, keeps the first violating batches as evidence, quarantines the records that
// break the SSA (kept and shown, never forwarded; tag.go) and the sinks (sinks.go, writers in
// agent/sink) forward the others; the TAXII server (taxii.go, agent/taxii), when configured,
// offers them as STIX 2.1 collections to those the SSA's handling allows. Both ends hold to the SSA's agreed method (method.go): the
// negotiation point refuses a method the agent cannot honour, delivery sends nothing and
// receive-and-verify takes nothing over a protocol or connection security the SSA does not
// list. The ledger (ledger.go) counts what became of every record,
// per SSA, on both sides. Each is built from what it uses and wired in the agent's
// start; none reaches another through the Agent.
//
// In a community (config key community), the community roster (roster.go, type community)
// decides who may connect, in place of the allow-list: its gater wraps the allow-list's, it
// keeps the k-of-n signed roster (protocol.VerifyRoster) in the store, and passes each newer
// one to the connected members over /ssanet/roster/1.0.0, which apply it at once.
//
// Only the community's members (the allow-list, or the roster) use the ssanet protocols
// (members.go): with the private directory the gaters close every other connection; with the
// public one (directory: amino), whose DHT needs connections with anyone, every stream of an
// ssanet protocol is checked at open, in both directions, instead.
//
// The agent never trusts a peer's bytes: sizes are capped before reading, buffers grow with
// what arrives, every read and write has a deadline, a peer's open negotiations are bounded,
// exchange streams are taken only from providers of an SSA in force, and a stream that
// misbehaves is reset while the agent goes on serving everyone else.
package agent
