package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	msmux "github.com/multiformats/go-multistream"

	"github.com/ssanet/ssanet/protocol"
)

// Why an attempt to reach a peer failed, as the dialling side can tell. ErrNoAnswer (the peer
// was reached but did not answer in time) is the fourth.
var (
	// ErrUnreachable means no connection with the peer could be made: no address known, none
	// answering, or the dial refused. The attempt is retried.
	ErrUnreachable = errors.New("agent: the peer cannot be reached")
	// ErrRefusedByPeer means the peer closed every connection right after the security
	// handshake, twice in a row: what an ssanet agent (and any go-libp2p host with a
	// connection gater) does to a peer outside its allow-list. Final.
	ErrRefusedByPeer = errors.New("agent: the peer closed the connection right after the handshake: its allow-list does not include this agent")
	// ErrNotSSAnet means the peer speaks libp2p but not the ssanet protocol asked for
	// (multistream "protocols not supported"): it is no ssanet agent, or not one of this
	// version. Final.
	ErrNotSSAnet = errors.New("agent: the peer speaks libp2p but not ssanet")
)

// openStream connects to p and opens a stream of proto, and says why it could not: an error
// that is ErrUnreachable, ErrRefusedByPeer, ErrNotSSAnet or ErrNoAnswer. A connection closed
// before a stream could be opened on it is tried once more at once, so that a connection
// lost by chance is not taken for a refusal.
func openStream(ctx context.Context, h host.Host, p peer.ID, proto libp2pprotocol.ID) (network.Stream, error) {
	const attempts = 2
	// Negotiation and delivery may run over a relayed connection (reach.go).
	ctx = network.WithAllowLimitedConn(ctx, "ssanet")
	var err error
	for range attempts {
		if err := h.Connect(ctx, peer.AddrInfo{ID: p}); err != nil {
			if errors.Is(err, swarm.ErrGaterDisallowedConnection) {
				return nil, fmt.Errorf("%w: this agent's own allow-list does not include %s (allow in config.yaml): %w", ErrUnreachable, p, err)
			}
			return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
		}
		var st network.Stream
		st, err = h.NewStream(ctx, p, proto)
		var unsupported msmux.ErrNotSupported[libp2pprotocol.ID]
		switch {
		case err == nil:
			return st, nil
		case errors.As(err, &unsupported):
			return nil, fmt.Errorf("%w (%s): %w", ErrNotSSAnet, proto, err)
		case ctx.Err() != nil:
			return nil, fmt.Errorf("%w: %w", ErrNoAnswer, err)
		case !disconnected(ctx, h, p):
			return nil, fmt.Errorf("%w: %w", ErrNoAnswer, err)
		}
	}
	return nil, fmt.Errorf("%w: %w", ErrRefusedByPeer, err)
}

// closeWait bounds how long openStream waits, after a stream could not be opened, for a
// connection the peer closed to be gone on this side too (the close may still be on its way).
const closeWait = 250 * time.Millisecond

// disconnected reports whether p has no connection with h, waiting up to closeWait for the
// last one to go.
func disconnected(ctx context.Context, h host.Host, p peer.ID) bool {
	const polls = 10
	for i := range polls {
		if h.Network().Connectedness(p) != network.Connected {
			return true
		}
		if i == polls-1 {
			break
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(closeWait / polls):
		}
	}
	return false
}

// finalReason is the reason that ends a negotiation whose delivery failed with err, if the
// failure is final (the peer refused this agent, or does not speak ssanet); false if the
// attempt is to be retried.
func finalReason(err error) (protocol.Reason, bool) {
	switch {
	case errors.Is(err, ErrRefusedByPeer):
		return protocol.Reason{Code: protocol.CodeNotAuthorized, Component: "peer",
			Text: "the peer closed the connection right after the handshake: its allow-list does not include this agent; ask its operator to add this agent's peer ID"}, true
	case errors.Is(err, ErrStreamRefused):
		return protocol.Reason{Code: protocol.CodeNotAuthorized, Component: "peer",
			Text: "the peer refused the negotiation stream: its allow-list or community roster does not include this agent; ask its operator to add this agent's peer ID"}, true
	case errors.Is(err, ErrNotSSAnet):
		return protocol.Reason{Code: protocol.CodeNotSSAnetPeer, Component: "peer",
			Text: "the peer speaks libp2p but not " + ProtocolNegotiate + ": it is no ssanet agent; check the peer ID"}, true
	}
	return protocol.Reason{}, false
}

// reachClass is the short name of why an attempt failed, as `ssanet peers` shows it.
func reachClass(err error) string {
	switch {
	case errors.Is(err, ErrRefusedByPeer), errors.Is(err, ErrStreamRefused):
		return "refused"
	case errors.Is(err, ErrNotSSAnet):
		return "not-ssanet"
	case errors.Is(err, ErrUnreachable):
		return "unreachable"
	case errors.Is(err, ErrNoAnswer):
		return "no-answer"
	}
	return "error"
}

// maxReachPeers bounds the peers whose last failure is remembered; past it the peer that
// failed longest ago is forgotten.
const maxReachPeers = 4096

// attempt is the last failed attempt to reach a peer.
type attempt struct {
	Err   string
	Class string
	At    time.Time
}

// reachLog keeps the last failed attempt to reach each peer, for `ssanet peers` and for the
// CLI to say why a request waits. A delivery to the peer that goes through clears it.
type reachLog struct {
	now    func() time.Time
	mu     sync.Mutex
	peers  map[peer.ID]attempt
	maxLen int
}

func newReachLog(now func() time.Time) *reachLog {
	return &reachLog{now: now, peers: map[peer.ID]attempt{}, maxLen: maxReachPeers}
}

// failed records that delivering a message to p failed with err.
func (l *reachLog) failed(p peer.ID, err error) {
	a := attempt{Err: err.Error(), Class: reachClass(err), At: l.now()}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.peers[p]; !ok && len(l.peers) >= l.maxLen {
		var oldest peer.ID
		for q, b := range l.peers {
			if oldest == "" || b.At.Before(l.peers[oldest].At) {
				oldest = q
			}
		}
		delete(l.peers, oldest)
	}
	l.peers[p] = a
}

// reached records that a message was delivered to p.
func (l *reachLog) reached(p peer.ID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.peers, p)
}

// ofPeer is the last failure to reach p, if it has not been reached since.
func (l *reachLog) ofPeer(p peer.ID) (attempt, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a, ok := l.peers[p]
	return a, ok
}

// failedPeers lists the peers with a failure remembered.
func (l *reachLog) failedPeers() []peer.ID {
	l.mu.Lock()
	defer l.mu.Unlock()
	ps := make([]peer.ID, 0, len(l.peers))
	for p := range l.peers {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

// abandon ends negotiation s, a request its peer can never receive, with why (protocol.Abandon:
// failed, nothing sent). A negotiation past request-sent is left as it is: the peer got our
// request, so it answers or expires. The caller does not hold s.mu.
func (n *negotiator) abandon(s *session, why protocol.Reason) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.machine.State() != protocol.StateRequestSent {
		return
	}
	if _, err := n.step(s, false, protocol.Abandon{Reasons: []protocol.Reason{why}}); err != nil {
		n.log.Error("abandon request", "ssa", s.rec.SSAID, "peer", s.rec.Peer, "err", err)
		return
	}
	n.log.Warn("request abandoned: the peer cannot take part", "ssa", s.rec.SSAID, "peer", s.rec.Peer, "reason", why.String())
}
