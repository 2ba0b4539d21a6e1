package agent

import (
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// PeerView is one known peer as `ssanet peers` shows it: where it is, whether it is
// connected, and the last failure to reach it.
type PeerView struct {
	Peer  string   `json:"peer"`
	Addrs []string `json:"addrs"`
	// Connected says whether a connection with the peer is open now, direct or relayed;
	// Connections lists them.
	Connected   bool       `json:"connected"`
	Connections []ConnView `json:"connections,omitempty"`
	// Path is direct when a direct connection is open, relayed when only relayed ones are,
	// empty when none is.
	Path string `json:"path,omitempty"`
	// Negotiations counts this agent's negotiations with the peer, over or not.
	Negotiations int `json:"negotiations"`
	// Allowed says that the peer is in the allow-list (every peer is when the list is empty),
	// or, in a community, admitted by its roster.
	Allowed bool `json:"allowed"`
	// LastError is the last failure to reach the peer, if it has not been reached since; its
	// kind is refused, not-ssanet, unreachable, no-answer or error.
	LastError     string    `json:"last_error,omitempty"`
	LastErrorKind string    `json:"last_error_kind,omitempty"`
	LastErrorAt   time.Time `json:"last_error_at,omitzero"`
}

// ConnView is one open connection.
type ConnView struct {
	// Direction is inbound (the peer dialled) or outbound (this agent did).
	Direction string    `json:"direction"`
	Remote    string    `json:"remote"`
	Opened    time.Time `json:"opened"`
	// Relay is the peer ID of the relay a relayed connection runs through (empty: direct);
	// Limited says the relay bounds it in duration and data (reach.go).
	Relay   string `json:"relay,omitempty"`
	Limited bool   `json:"limited,omitempty"`
}

// Peers lists the peers this agent knows, sorted by ID: those it negotiated with, those
// connected now, those in its allow-list and those it failed to reach. None is an empty list.
func (a *Agent) Peers() ([]PeerView, error) {
	recs, err := a.store.Negotiations()
	if err != nil {
		return nil, err
	}
	negs := map[peer.ID]int{}
	for _, rec := range recs {
		if p, err := peer.Decode(rec.Peer); err == nil {
			negs[p]++
		}
	}
	allow := a.allow.list()
	known := map[peer.ID]bool{}
	for p := range negs {
		known[p] = true
	}
	for p := range allow {
		known[p] = true
	}
	for _, p := range a.host.Network().Peers() {
		known[p] = true
	}
	for _, p := range a.reach.failedPeers() {
		known[p] = true
	}
	delete(known, a.ID())
	ids := make([]peer.ID, 0, len(known))
	for p := range known {
		ids = append(ids, p)
	}
	slices.Sort(ids)
	out := make([]PeerView, 0, len(ids))
	for _, p := range ids {
		out = append(out, a.peerView(p, negs[p], a.member(p) == nil))
	}
	return out, nil
}

func (a *Agent) peerView(p peer.ID, negs int, allowed bool) PeerView {
	v := PeerView{Peer: p.String(), Addrs: []string{}, Negotiations: negs, Allowed: allowed,
		Connected: len(a.host.Network().ConnsToPeer(p)) > 0}
	for _, addr := range a.host.Peerstore().Addrs(p) {
		v.Addrs = append(v.Addrs, addr.String())
	}
	slices.Sort(v.Addrs)
	for _, c := range a.host.Network().ConnsToPeer(p) {
		st := c.Stat()
		cv := ConnView{Direction: directionName(st.Direction), Remote: c.RemoteMultiaddr().String(),
			Opened: st.Opened, Limited: st.Limited}
		via, relayed := relayedVia(c)
		switch {
		case !relayed:
			v.Path = "direct"
		case v.Path == "":
			v.Path = "relayed"
		}
		if relayed {
			cv.Relay = via.String()
		}
		v.Connections = append(v.Connections, cv)
	}
	if at, ok := a.reach.ofPeer(p); ok {
		v.LastError, v.LastErrorKind, v.LastErrorAt = at.Err, at.Class, at.At
	}
	return v
}

func directionName(d network.Direction) string {
	switch d {
	case network.DirInbound:
		return "inbound"
	case network.DirOutbound:
		return "outbound"
	}
	return "unknown"
}
