package discovery

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// TestAminoDirectory runs the public-directory mode on loopback: agents speak the IPFS DHT
// protocol (/ipfs/kad/1.0.0) and not ssanet's, advertise under CommunityKey, find each other
// within their community only, and serve their offers only to the allow-list.
func TestAminoDirectory(t *testing.T) {
	const community = "cert-example"
	boot := newNodeConfig(t, Config{Amino: true, Community: community})
	bi := []peer.AddrInfo{{ID: boot.h.ID(), Addrs: boot.h.Addrs()}}
	prov := newNodeConfig(t, Config{Amino: true, Community: community, Bootstrap: bi})
	req := newNodeConfig(t, Config{Amino: true, Community: community, Bootstrap: bi, Client: true})
	other := newNodeConfig(t, Config{Amino: true, Community: "another-community", Bootstrap: bi})
	prov.setOffers(offer(t, prov, "a", info("attack-detection-log", "eve")))

	for _, n := range []*node{boot, prov, other} {
		ps := n.h.Mux().Protocols()
		if !slices.Contains(ps, protocol.ID("/ipfs/kad/1.0.0")) || slices.Contains(ps, protocol.ID("/ssanet/kad/1.0.0")) {
			t.Fatalf("a DHT server in amino mode serves %v; want /ipfs/kad/1.0.0 and not /ssanet/kad/1.0.0", ps)
		}
	}
	findEventually(t, req, "attack-detection-log", "eve", prov)
	findEventually(t, req, "attack-detection-log", "", prov)

	// The record is under the documented key, which anyone can look up with the DHT alone.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var found []peer.ID
	for pi := range req.dir.dht.FindProvidersAsync(ctx, CommunityKey(community, "attack-detection-log", "eve"), 0) {
		found = append(found, pi.ID)
	}
	if !slices.Equal(found, []peer.ID{prov.h.ID()}) {
		t.Fatalf("providers of CommunityKey(%s, attack-detection-log, eve) = %v; want %s", community, found, prov.h.ID())
	}
	// Another community's keys differ: it finds no provider of the same type, though it
	// reaches the record under this community's key (so the none is not a lost connection).
	var otherFound []peer.ID
	for pi := range other.dir.dht.FindProvidersAsync(ctx, CommunityKey(community, "attack-detection-log", "eve"), 0) {
		otherFound = append(otherFound, pi.ID)
	}
	if !slices.Equal(otherFound, []peer.ID{prov.h.ID()}) {
		t.Fatalf("another community's node finds %v under this community's key; want %s", otherFound, prov.h.ID())
	}
	got, err := other.dir.Find(ctx, "attack-detection-log", "eve")
	if err != nil || len(got) != 0 {
		t.Fatalf("another community finds %v, %v; want none", ids(got), err)
	}
}

func TestAminoOffersOnlyToAllowList(t *testing.T) {
	const community = "cert-example"
	boot := newNodeConfig(t, Config{Amino: true, Community: community})
	bi := []peer.AddrInfo{{ID: boot.h.ID(), Addrs: boot.h.Addrs()}}
	member := newNodeConfig(t, Config{Amino: true, Community: community, Bootstrap: bi})
	stranger := newNodeConfig(t, Config{Amino: true, Community: community, Bootstrap: bi})
	prov := newNodeConfig(t, Config{Amino: true, Community: community, Bootstrap: bi,
		Allowed: func(p peer.ID) bool { return p == member.h.ID() }})
	prov.setOffers(offer(t, prov, "a", info("blacklist", "syslog")))

	findEventually(t, member, "blacklist", "syslog", prov)
	// The stranger finds the pointer in the public directory but not the offers.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := stranger.dir.FetchOffers(ctx, prov.h.ID()); err == nil {
		t.Fatal("a peer outside the allow-list fetched the offers")
	}
	findEventually(t, stranger, "blacklist", "syslog")
}

func TestAminoNeedsCommunity(t *testing.T) {
	n := newNode(t, nil)
	if _, err := New(n.h, n.id, Config{Amino: true}, n.currentOffers, time.Now); !errors.Is(err, ErrNoCommunity) {
		t.Fatalf("amino without a community: %v; want ErrNoCommunity", err)
	}
}
