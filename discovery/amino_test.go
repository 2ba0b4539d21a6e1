package discovery

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
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
	key := CommunityKey(community, "attack-detection-log", "eve")
	providersEventually(t, req, key, prov)
	// Another community's keys differ: it finds no provider of the same type, though it
	// reaches the record under this community's key (so the none is not a lost connection).
	providersEventually(t, other, key, prov)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := other.dir.Find(ctx, "attack-detection-log", "eve")
	if err != nil || len(got) != 0 {
		t.Fatalf("another community finds %v, %v; want none", ids(got), err)
	}
}

// providersEventually looks key up with the DHT alone until exactly want (in any order) provide it, or fails
// after a deadline: a node that has just joined may not yet have the bootstrap peer in its
// routing table, and its first lookups then find nothing.
func providersEventually(t *testing.T, from *node, key cid.Cid, want ...*node) {
	t.Helper()
	var wantIDs []peer.ID
	for _, w := range want {
		wantIDs = append(wantIDs, w.h.ID())
	}
	slices.Sort(wantIDs)
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		var found []peer.ID
		for pi := range from.dir.dht.FindProvidersAsync(ctx, key, 0) {
			found = append(found, pi.ID)
		}
		cancel()
		slices.Sort(found)
		if slices.Equal(found, wantIDs) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("providers of %s seen from %s = %v; want %v", key, from.h.ID(), found, wantIDs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAminoOffersOnlyToAllowList: in the public directory a provider with an allow-list serves
// its offers to its members only, and says so: a stranger's fetch fails with the provider's
// refusal (ErrOffersRefused, not any error), counted by Refused; a member's goes through. The
// provider neither fetches the offers of a peer outside its list (ErrNotAllowed) nor lists
// such a provider in Find, though it advertises under the community's key.
func TestAminoOffersOnlyToAllowList(t *testing.T) {
	const community = "cert-example"
	boot := newNodeConfig(t, Config{Amino: true, Community: community})
	bi := []peer.AddrInfo{{ID: boot.h.ID(), Addrs: boot.h.Addrs()}}
	member := newNodeConfig(t, Config{Amino: true, Community: community, Bootstrap: bi})
	stranger := newNodeConfig(t, Config{Amino: true, Community: community, Bootstrap: bi})
	var refused atomic.Int32
	prov := newNodeConfig(t, Config{Amino: true, Community: community, Bootstrap: bi,
		Allowed: func(p peer.ID) error {
			if p != member.h.ID() {
				return errors.New("not the member")
			}
			return nil
		},
		Refused: func(p peer.ID, _ error) {
			if p == stranger.h.ID() {
				refused.Add(1)
			}
		}})
	prov.setOffers(offer(t, prov, "a", info("blacklist", "syslog")))
	stranger.setOffers(offer(t, stranger, "b", info("blacklist", "syslog")))

	findEventually(t, member, "blacklist", "syslog", prov, stranger)
	// The stranger finds the pointer in the public directory but not the offers.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := stranger.dir.FetchOffers(ctx, prov.h.ID()); !errors.Is(err, ErrOffersRefused) {
		t.Fatalf("a peer outside the allow-list fetched the offers: %v; want %v", err, ErrOffersRefused)
	}
	if n := refused.Load(); n != 1 {
		t.Errorf("refusals told: %d, want 1", n)
	}
	findEventually(t, stranger, "blacklist", "syslog")
	// The provider does not ask the stranger, whose offers are under the same key.
	if _, err := prov.dir.FetchOffers(ctx, stranger.h.ID()); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("fetch from a peer outside the own allow-list: %v; want %v", err, ErrNotAllowed)
	}
	providersEventually(t, prov, CommunityKey(community, "blacklist", "syslog"), prov, stranger)
	got, err := prov.dir.Find(ctx, "blacklist", "syslog")
	if err != nil || len(got) != 0 {
		t.Fatalf("the provider finds %v, %v; want none (the stranger left out)", ids(got), err)
	}
}

func TestAminoNeedsCommunity(t *testing.T) {
	n := newNode(t, nil)
	if _, err := New(n.h, n.id, Config{Amino: true}, n.currentOffers, time.Now); !errors.Is(err, ErrNoCommunity) {
		t.Fatalf("amino without a community: %v; want ErrNoCommunity", err)
	}
}

// kuboWAN starts, on loopback, a DHT server configured as kubo 0.43's public DHT
// (/ipfs/kad/1.0.0, the WAN half of go-libp2p-kad-dht's dual.New, in server mode) and returns
// how to reach it: it keeps only peers with public addresses in its routing table and strips
// every non-public address from the provider records it stores and serves. On loopback it
// therefore names providers without any address.
func kuboWAN(t *testing.T) peer.AddrInfo {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	kad, err := dht.New(h, dht.Mode(dht.ModeServer),
		dht.QueryFilter(dht.PublicQueryFilter), dht.RoutingTableFilter(dht.PublicRoutingTableFilter),
		dht.AddressFilter(func(as []ma.Multiaddr) []ma.Multiaddr { return ma.FilterAddrs(as, manet.IsPublicAddr) }))
	if err != nil {
		h.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { kad.Close(); h.Close() })
	return peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}
}

// TestAminoProviderWithoutAddresses joins two agents through a kubo-like DHT server only: the
// provider record it serves has no address, and the requester still reaches the provider, whose
// addresses it asks the DHT for (FIND_PEER, answered from the server's peerstore).
func TestAminoProviderWithoutAddresses(t *testing.T) {
	const community = "cert-example"
	bi := []peer.AddrInfo{kuboWAN(t)}
	prov := newNodeConfig(t, Config{Amino: true, Community: community, Bootstrap: bi})
	req := newNodeConfig(t, Config{Amino: true, Community: community, Bootstrap: bi, Client: true})
	prov.setOffers(offer(t, prov, "a", info("attack-detection-log", "eve")))

	key := CommunityKey(community, "attack-detection-log", "eve")
	providersEventually(t, req, key, prov)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for pi := range req.dir.dht.FindProvidersAsync(ctx, key, 0) {
		if len(pi.Addrs) != 0 {
			t.Fatalf("the kubo-like server serves the provider record with addresses %v; want none (the test would not show locating)", pi.Addrs)
		}
	}
	if req.h.Network().Connectedness(prov.h.ID()) == network.Connected {
		t.Fatal("the requester is already connected to the provider")
	}
	findEventually(t, req, "attack-detection-log", "eve", prov)
}
