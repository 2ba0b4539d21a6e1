package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"

	"github.com/ssanet/ssanet/discovery"
)

// Who may use the ssanet protocols. The community (the allow-list, or in its place the
// community roster) decides it in both directory modes, enforced at two levels:
//
//   - With the private directory (directory: ssanet) the connection gater (agent.go gater,
//     roster.go rosterGater) closes every connection outside the community right after the
//     handshake, and dials none: a stranger never opens a stream at all.
//   - With the public directory (directory: amino) the agent needs connections with peers
//     outside the community (the public DHT, identify, ping, AutoNAT), so no gater closes
//     them. Each ssanet stream protocol checks the peer instead, at every stream open, in
//     both directions: a stream a stranger opens (negotiation, exchange, monitor, roster,
//     offers) is reset with network.StreamGated, counted in
//     ssanet_messages_refused_total{protocol, reason} and logged (rate-limited, refusallog.go);
//     the agent opens none of them to a stranger (ErrUnreachable, as the gater's refusal to
//     dial) and fetches no stranger's offers.
//
// The checks read the allow-list and the roster as they are at that moment, so a reload or a
// new roster applies at once; the streams of the ssanet protocols still open with a peer that
// is no longer a member are reset. With the private directory its connections are closed too;
// with the public one they stay, for the DHT, and carry nothing of ssanet's.
//
// The stream checks run in the private directory's mode too, where they refuse nothing the
// gater has not already refused.

// ErrStreamRefused means the peer refused a stream of an ssanet protocol to this agent (a
// reset with network.StreamGated): its allow-list or community roster does not include this
// agent. Final for a negotiation.
var ErrStreamRefused = errors.New("agent: the peer refused the stream: its allow-list or community roster does not include this agent")

// ssanetProtocols are the stream protocols that only the community's members may use.
var ssanetProtocols = []libp2pprotocol.ID{ProtocolNegotiate, ProtocolExchange, ProtocolMonitor, ProtocolRoster, discovery.ProtocolOffers}

// publicDirectory reports whether the agent uses the public directory, where the connection
// gater admits every peer and the ssanet protocols check the peer at each stream open.
func (c *Config) publicDirectory() bool { return c.Directory == "amino" }

// member says why p may not use the ssanet protocols now, or nil: in a community, p is not
// admitted by the roster held (ErrRosterRefused); else p is outside a non-empty allow-list
// (ErrNotAllowed).
func (a *Agent) member(p peer.ID) error {
	if a.roster.active() {
		if err := a.roster.admits(p); err != nil {
			return fmt.Errorf("%w: %w", ErrRosterRefused, err)
		}
		return nil
	}
	if !a.allow.allowed(p) {
		return ErrNotAllowed
	}
	return nil
}

// membersOnly wraps the handler of the ssanet stream protocol proto (its label in
// ssanet_messages_refused_total): the stream of a peer outside the community is reset with
// network.StreamGated, which its opener reports as ErrStreamRefused, and counted and logged
// as a refusal.
func (a *Agent) membersOnly(proto string, h network.StreamHandler) network.StreamHandler {
	return func(st network.Stream) {
		p := st.Conn().RemotePeer()
		if err := a.member(p); err != nil {
			_ = st.ResetWithError(network.StreamGated)
			a.refusals.refused(proto, p, "stream refused: the peer is outside this agent's community", err, "proto", string(st.Protocol()))
			return
		}
		h(st)
	}
}

// offersRefused counts and logs an offers stream the directory refused to p, for err
// (a.member's reason).
func (a *Agent) offersRefused(p peer.ID, err error) {
	a.refusals.refused("offers", p, "stream refused: the peer is outside this agent's community", err, "proto", discovery.ProtocolOffers)
}

// openMemberStream is openStream to a member of the community only (member nil: anyone). A
// peer outside it is not dialled: ErrUnreachable, as the gater refuses such a dial with the
// private directory. The stream returned reports the peer's refusal (a reset with
// network.StreamGated) as ErrStreamRefused.
func openMemberStream(ctx context.Context, h host.Host, member func(peer.ID) error, p peer.ID, proto libp2pprotocol.ID) (network.Stream, error) {
	if member != nil {
		if err := member(p); err != nil {
			return nil, fmt.Errorf("%w: this agent's own allow-list or community roster does not include %s: %w", ErrUnreachable, p, err)
		}
	}
	st, err := openStream(ctx, h, p, proto)
	if err != nil {
		return nil, refusal(err)
	}
	return refusalStream{st}, nil
}

// refusalStream is a stream whose reads and writes report the peer's refusal of it as
// ErrStreamRefused.
type refusalStream struct{ network.Stream }

func (s refusalStream) Read(b []byte) (int, error) {
	n, err := s.Stream.Read(b)
	return n, refusal(err)
}

func (s refusalStream) Write(b []byte) (int, error) {
	n, err := s.Stream.Write(b)
	return n, refusal(err)
}

func (s refusalStream) CloseWrite() error { return refusal(s.Stream.CloseWrite()) }

func (s refusalStream) Close() error { return refusal(s.Stream.Close()) }

// refusal is err, as ErrStreamRefused if it is the peer's refusal of the stream.
func refusal(err error) error {
	if err != nil && discovery.Gated(err) {
		return fmt.Errorf("%w: %w", ErrStreamRefused, err)
	}
	return err
}

// refuseStreams resets p's open streams of the ssanet protocols, in either direction, with
// network.StreamGated, and says how many there were: p is no longer a member.
func (a *Agent) refuseStreams(p peer.ID) int {
	n := 0
	for _, c := range a.host.Network().ConnsToPeer(p) {
		for _, st := range c.GetStreams() {
			if slices.Contains(ssanetProtocols, st.Protocol()) {
				_ = st.ResetWithError(network.StreamGated)
				n++
			}
		}
	}
	return n
}

// warnOpenToAll warns, with the public directory and neither an allow-list nor a roster, that
// any peer of the public network that finds this agent may use the ssanet protocols.
func (a *Agent) warnOpenToAll() {
	if a.cfg.publicDirectory() && len(a.cfg.Allow) == 0 && !a.roster.active() {
		a.log.Warn("directory: amino without allow or community: any peer of the public IPFS network that finds this agent may fetch its offers and negotiate with it, and its accept policy alone decides; "+
			"list the community's peer IDs in allow, or set community, to admit its members only", "community", a.cfg.DirectoryCommunity)
	}
}

// dropNonMembers applies a change of the community (a reload of the allow-list, a new
// roster) to the connected peers it no longer admits: their connections are closed with the
// private directory (the gater refuses their new ones); with the public one they stay for the
// DHT, and their open streams of the ssanet protocols are reset (new ones are refused at
// open). why is said in the log. A reload that empties the allow-list with the public
// directory opens the agent to anyone: it is warned of, as at start.
func (a *Agent) dropNonMembers(why string, args ...any) {
	a.warnOpenToAll()
	for _, p := range a.host.Network().Peers() {
		err := a.member(p)
		if err == nil {
			continue
		}
		if a.cfg.publicDirectory() {
			// Most of the peers connected are the public DHT's, never members: only a peer
			// whose ssanet streams were reset is logged.
			if n := a.refuseStreams(p); n > 0 {
				a.log.Info("ssanet streams reset and refused from now on: "+why+"; the connection stays, for the public directory (DHT)",
					slices.Concat(args, []any{"peer", p, "streams_reset", n, "err", err})...)
			}
			continue
		}
		a.log.Info("connection closed: "+why, slices.Concat(args, []any{"peer", p, "err", err})...)
		if err := a.host.Network().ClosePeer(p); err != nil {
			a.log.Warn("close the connections of a peer no longer admitted", "peer", p, "err", err)
		}
	}
}
