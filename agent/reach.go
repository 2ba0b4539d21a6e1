package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/host/autorelay"
	"github.com/libp2p/go-libp2p/p2p/host/peerstore/pstoremem"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/ssanet/ssanet/protocol"
)

// Reachability of an agent behind NAT or a firewall (config: reachability, relays, relay).
//
// Every agent runs AutoNAT (v1 and v2) to learn whether others can dial it, as client and as
// server for the peers it is connected to (with the private directory the community's
// members only; with the public one any peer, as the DHT needs), the circuit relay v2
// client, and DCUtR hole punching. An agent that AutoNAT finds private (or whose reachability is set to private)
// reserves a slot at a relay: those listed in relays, else members of its allow-list whose
// addresses it knows, and announces the relayed address (…/p2p/RELAY/p2p-circuit/p2p/SELF) in
// the directory. A peer that connects through the relay then tries DCUtR: both sides dial
// each other at once, and when the NATs let it through the connection becomes direct. DCUtR
// needs the private agent's external address, which the relay observes: the agent connects
// to its relay only once it listens (afterListen).
//
// Decision: negotiation and record delivery both run over a relayed connection; they do not
// wait for a direct one. A sensor behind a NAT that maps per destination is never reached
// directly, and an SSA it cannot serve is worse than records that go through a relay the
// community runs. The relay is a member of the community (it serves the allow-list's peers, or
// in a community the roster's members, only) and sees only the encrypted stream. Where a direct connection exists libp2p opens streams
// on it first. A relay that sets limits (relay.duration, relay.data) resets the relayed
// connection when one is reached: delivery then resumes at the first record the requester
// has not acknowledged once a connection is back, which a provider that cannot dial its
// requester must wait for (README "Agents behind NAT"). `ssanet peers` shows each connection as
// direct or relayed, and through which relay.

// Default limits of a relayed connection this agent serves as a relay: ample for a
// negotiation (a few messages of a few KiB) and about a thousand records of 650 bytes in
// batches of limitedBatchBytes.
const (
	DefaultRelayDuration = Duration(2 * time.Minute)
	DefaultRelayData     = 1 << 20
)

// limitedBatchBytes bounds a delivery batch sent over a limited connection, one through a
// relay that bounds the data it carries (relay.data, in each direction): a batch cut by the
// relay's reset is sent again whole on the next connection, so one larger than the limit
// (batchBytes, 2 MiB, is two of DefaultRelayData) would never get through. MinRelayData
// keeps several of them under any limit an ssanet relay sets; under a relay of another kind
// with a lower limit such a delivery stalls, and `ssanet monitor` shows the provider's
// records pending.
const limitedBatchBytes = 128 << 10

// MinRelayData is the lowest relay.data: a negotiation and a few delivery batches
// (limitedBatchBytes) per relayed connection.
const MinRelayData = 4 * limitedBatchBytes

// batchBytesOn is the byte bound of a delivery batch sent on c.
func batchBytesOn(c network.Conn) int {
	if c.Stat().Limited {
		return limitedBatchBytes
	}
	return batchBytes
}

// RelayConfig is the circuit relay v2 service an agent with a public address may run for the
// members of its community (config: relay).
type RelayConfig struct {
	// Serve runs the relay service (it starts only while the agent is publicly reachable). It
	// needs an allow-list or a community roster: only their peers may reserve a slot or be
	// relayed to.
	Serve bool `yaml:"serve,omitempty"`
	// Duration and Data bound each relayed connection: the relay resets it after Duration
	// or after Data bytes in either direction. 0: DefaultRelayDuration, DefaultRelayData.
	Duration Duration `yaml:"duration,omitempty"`
	Data     int64    `yaml:"data,omitempty"`
	// Unlimited relays connections without a limit on duration or data (the relayed
	// connection is then not marked limited).
	Unlimited bool `yaml:"unlimited,omitempty"`
	// MaxReservations bounds the peers holding a slot at once; MaxCircuits the relayed
	// connections open through one peer's slot. 0: 128 and 16.
	MaxReservations int `yaml:"max-reservations,omitempty"`
	MaxCircuits     int `yaml:"max-circuits,omitempty"`
}

// validateReach checks reachability, relays and relay.
func (c *Config) validateReach() error {
	switch c.Reachability {
	case "", "auto", "public", "private":
	default:
		return fmt.Errorf("config: reachability must be auto, public or private, not %q", c.Reachability)
	}
	if _, err := c.relayPeers(); err != nil {
		return err
	}
	r := c.Relay
	if r.Serve && len(c.Allow) == 0 && c.Community == "" {
		return errors.New("config: relay.serve needs an allow-list or a community roster: a relay serves the members of its community only (list them in allow, or set community)")
	}
	if r.Duration < 0 || r.Data < 0 || r.MaxReservations < 0 || r.MaxCircuits < 0 {
		return errors.New("config: relay.duration, relay.data, relay.max-reservations and relay.max-circuits must not be negative")
	}
	if r.Data != 0 && r.Data < MinRelayData {
		return fmt.Errorf("config: relay.data must be at least %d bytes (512 KiB): each relayed connection must carry a negotiation and whole delivery batches", MinRelayData)
	}
	if r.Unlimited && (r.Duration != 0 || r.Data != 0) {
		return errors.New("config: relay.unlimited excludes relay.duration and relay.data: drop one or the other")
	}
	return nil
}

// relayPeers parses relays.
func (c *Config) relayPeers() ([]peer.AddrInfo, error) {
	var out []peer.AddrInfo
	for _, s := range c.Relays {
		addr, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("config: relays: %q is not a multiaddr: %w", s, err)
		}
		pi, err := peer.AddrInfoFromP2pAddr(addr)
		if err != nil {
			return nil, fmt.Errorf("config: relays: %q must end in /p2p/PEERID: %w", s, err)
		}
		out = append(out, *pi)
	}
	return out, nil
}

// relayResources are the relay service's limits from the configuration.
func (r RelayConfig) resources() relayv2.Resources {
	res := relayv2.DefaultResources()
	if r.MaxReservations > 0 {
		res.MaxReservations = r.MaxReservations
	}
	if r.MaxCircuits > 0 {
		res.MaxCircuits = r.MaxCircuits
	}
	if r.Unlimited {
		res.Limit = nil
		return res
	}
	res.Limit = &relayv2.RelayLimit{Duration: time.Duration(DefaultRelayDuration), Data: DefaultRelayData}
	if r.Duration > 0 {
		res.Limit.Duration = time.Duration(r.Duration)
	}
	if r.Data > 0 {
		res.Limit.Data = r.Data
	}
	return res
}

// relayACL lets only the community's members reserve a slot at this agent's relay, and
// relays only between them; admits says who they are now (a reload or a new roster changes
// it): Agent.relayAdmits.
type relayACL struct{ admits func(peer.ID) bool }

func (r relayACL) AllowReserve(p peer.ID, _ ma.Multiaddr) bool { return r.admits(p) }
func (r relayACL) AllowConnect(src peer.ID, _ ma.Multiaddr, dest peer.ID) bool {
	return r.admits(src) && r.admits(dest)
}

// relayAdmits says whether p is a member of this agent's community, as its relay serves them:
// in a community, admitted by the roster held (roster.go); else in the allow-list. Unlike
// the gater, an empty allow-list admits nobody: a relay is never open to anyone.
func (a *Agent) relayAdmits(p peer.ID) bool {
	if a.roster.active() {
		return a.roster.admits(p) == nil
	}
	return a.allow.list()[p]
}

// reachOptions are the libp2p options of reachability: AutoNAT, relay client and service,
// hole punching, the relays to reserve at when private. The caller calls listening once the
// host listens on every configured address: the relays are offered to autorelay only then
// (afterListen).
func (a *Agent) reachOptions() (opts []libp2p.Option, listening func(), err error) {
	allow := a.allow.list() // the relays to reserve at: the allow-list at start
	// The peerstore is made here so that the relay source reads it without waiting for the
	// host; the host closes it.
	ps, err := pstoremem.NewPeerstore()
	if err != nil {
		return nil, nil, fmt.Errorf("peerstore: %w", err)
	}
	opts = []libp2p.Option{
		libp2p.Peerstore(ps),
		libp2p.EnableRelay(),
		libp2p.EnableAutoNATv2(),
		libp2p.EnableNATService(),
		libp2p.EnableHolePunching(),
	}
	switch a.cfg.Reachability {
	case "public":
		opts = append(opts, libp2p.ForceReachabilityPublic())
	case "private":
		opts = append(opts, libp2p.ForceReachabilityPrivate())
	}
	if a.cfg.Relay.Serve {
		opts = append(opts, libp2p.EnableRelayService(relayv2.WithResources(a.cfg.Relay.resources()),
			relayv2.WithACL(relayACL{admits: a.relayAdmits})))
	}
	ready := make(chan struct{})
	static, _ := a.cfg.relayPeers() // validated with the config
	switch {
	case len(static) > 0:
		// autorelay.WithStaticRelays, offered once the agent listens.
		opts = append(opts, libp2p.EnableAutoRelayWithPeerSource(afterListen(ready, staticRelays(static)),
			autorelay.WithMaxCandidates(len(static)), autorelay.WithMinCandidates(len(static)),
			autorelay.WithNumRelays(len(static))))
	case len(allow) > 0:
		opts = append(opts, libp2p.EnableAutoRelayWithPeerSource(afterListen(ready, allowedRelays(ps, a.self.PeerID(), allow)),
			// A community has few relays: one found is enough to reserve at.
			autorelay.WithMinCandidates(1)))
	}
	return opts, func() { close(ready) }, nil
}

// afterListen offers src's relays to autorelay only once ready is closed, when the agent
// listens. libp2p starts autorelay before the agent listens (it listens on each address
// itself, to fail on any that cannot be), and with reachability: private it dials a
// configured relay at once: a QUIC dial before the listener exists leaves from a new random
// port. The relay then sees the agent's NAT mapping of that port, not of the listening one:
// the agent is never told its external address, and DCUtR hole punching, which needs one
// (identify's observed address), never starts. Offered after, the connection to the relay
// leaves from the listening port, and one observation (the relay's) is enough to punch.
func afterListen(ready <-chan struct{}, src autorelay.PeerSource) autorelay.PeerSource {
	// autorelay asks its peer source from its own goroutine, which ends with ctx when the
	// host closes: waiting there holds back nothing else.
	return func(ctx context.Context, num int) <-chan peer.AddrInfo {
		select {
		case <-ready:
			return src(ctx, num)
		case <-ctx.Done():
			none := make(chan peer.AddrInfo)
			close(none)
			return none
		}
	}
}

// staticRelays offers the relays configured in relays, as autorelay.WithStaticRelays does.
func staticRelays(static []peer.AddrInfo) autorelay.PeerSource {
	return func(_ context.Context, num int) <-chan peer.AddrInfo {
		out := make(chan peer.AddrInfo, min(num, len(static)))
		defer close(out)
		for _, pi := range static[:cap(out)] {
			out <- pi
		}
		return out
	}
}

// allowedRelays offers autorelay the allow-list's peers whose addresses this agent knows, as
// candidate relays (those that do not run one are tried and dropped).
func allowedRelays(ps peerstore.Peerstore, self peer.ID, allow map[peer.ID]bool) autorelay.PeerSource {
	ids := make([]peer.ID, 0, len(allow))
	for p := range allow {
		if p != self {
			ids = append(ids, p)
		}
	}
	slices.Sort(ids)
	return func(_ context.Context, num int) <-chan peer.AddrInfo {
		out := make(chan peer.AddrInfo, num)
		defer close(out)
		for _, p := range ids {
			if len(out) == num {
				break
			}
			if addrs := ps.Addrs(p); len(addrs) > 0 {
				out <- peer.AddrInfo{ID: p, Addrs: addrs}
			}
		}
		return out
	}
}

// overRelays lets ctx's streams run over a limited connection, one through a relay that
// bounds it (relay.duration, relay.data): the directory's fetch of a provider's signed offers,
// a few KiB, like negotiation and delivery (openStream), reaches a provider that only a relay
// joins. Without it libp2p refuses the stream and `ssanet discover` leaves that provider out.
func overRelays(ctx context.Context) context.Context {
	return network.WithAllowLimitedConn(ctx, "ssanet")
}

// fetchOffers reads p's current signed offers from p, through a relay if need be.
func (a *Agent) fetchOffers(ctx context.Context, p peer.ID) ([]*protocol.Offer, error) {
	return a.dir.FetchOffers(overRelays(ctx), p)
}

// relayedVia is the relay a connection runs through, if it is relayed.
func relayedVia(c network.Conn) (peer.ID, bool) {
	addr := c.RemoteMultiaddr()
	if _, err := addr.ValueForProtocol(ma.P_CIRCUIT); err != nil {
		return "", false
	}
	before, _ := ma.SplitFunc(addr, func(c ma.Component) bool { return c.Protocol().Code == ma.P_CIRCUIT })
	s, err := before.ValueForProtocol(ma.P_P2P)
	if err != nil {
		return "", true
	}
	p, err := peer.Decode(s)
	if err != nil {
		return "", true
	}
	return p, true
}

// relayedTransport is the transport of a relayed connection as its dialler's libp2p (v0.51)
// reports it: without the connection's security, although the connection is secured end to
// end by one of the agent's security transports (the relay sees only ciphertext).
const relayedTransport = "p2p-circuit"

// relayedSecurity names the security of such a connection: one of noise and tls, which one
// unknown. A delivery over it keeps to an SSA's method.security only when that lists both.
const relayedSecurity = "noise or tls (relayed)"

// listsEverySecurity reports whether listed holds every security transport an agent has, so
// that a connection secured by any of them keeps to it.
func listsEverySecurity(listed []string) bool {
	for name := range securityIDs {
		if !listsSecurity(listed, name) {
			return false
		}
	}
	return true
}

// connState is c's connection state as the method checks read it. libp2p (v0.51) reports a
// relayed connection's security on the side that accepted it (with transport "tcp") but not
// on the side that dialled it: both sides read a relayed connection as relayedTransport
// without a security, so that provider and requester judge it alike.
func connState(c network.Conn) network.ConnectionState {
	if _, relayed := relayedVia(c); relayed {
		return network.ConnectionState{Transport: relayedTransport}
	}
	return c.ConnState()
}
