package discovery

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ssanet/ssanet/protocol"
)

type node struct {
	h   host.Host
	id  *protocol.Identity
	dir *Directory

	mu     sync.Mutex
	offers []*protocol.Offer
}

func (n *node) currentOffers() ([]*protocol.Offer, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.offers, nil
}

func (n *node) setOffers(o ...*protocol.Offer) {
	n.mu.Lock()
	n.offers = o
	n.mu.Unlock()
	n.dir.Readvertise()
}

func newNode(t *testing.T, bootstrap []peer.AddrInfo) *node {
	t.Helper()
	return newNodeConfig(t, Config{Bootstrap: bootstrap})
}

// newNodeConfig starts a node on loopback with cfg (Readvertise: an hour).
func newNodeConfig(t *testing.T, cfg Config) *node {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(libp2p.Identity(k), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	id, err := protocol.NewIdentity(k)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{h: h, id: id}
	cfg.Readvertise = time.Hour
	n.dir, err = New(h, id, cfg, n.currentOffers, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.dir.Close(); h.Close() })
	return n
}

func offer(t *testing.T, n *node, id string, info ...protocol.Information) *protocol.Offer {
	t.Helper()
	o, err := protocol.ParseOfferYAML(protocol.ExampleProvider, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	o.ID = id
	o.Terms.Information = info
	o.Terms.Participants.Provider.PeerID = n.h.ID().String()
	return o
}

func info(typ, format string) protocol.Information {
	return protocol.Information{Type: typ, Format: format}
}

// findEventually polls Find until the set of providers is want, or fails after a deadline.
func findEventually(t *testing.T, from *node, typ, format string, want ...*node) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		got, err := from.dir.Find(ctx, typ, format)
		cancel()
		if err == nil && sameProviders(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Find(%s, %s) = %v, %v; want %d providers", typ, format, ids(got), err, len(want))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func ids(ps []Provider) []string {
	var s []string
	for _, p := range ps {
		s = append(s, p.PeerID.ShortString())
	}
	return s
}

func sameProviders(got []Provider, want []*node) bool {
	if len(got) != len(want) {
		return false
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || g.PeerID == w.h.ID()
		}
		if !found {
			return false
		}
	}
	return true
}

func TestDirectory(t *testing.T) {
	boot := newNode(t, nil)
	bi := []peer.AddrInfo{{ID: boot.h.ID(), Addrs: boot.h.Addrs()}}
	var nodes []*node
	for range 9 {
		nodes = append(nodes, newNode(t, bi))
	}
	eve, iodef, both := nodes[0], nodes[1], nodes[2]
	eve.setOffers(offer(t, eve, "a", info("attack-detection-log", "eve")))
	iodef.setOffers(offer(t, iodef, "b", info("incident", "iodef")))
	both.setOffers(offer(t, both, "c", info("attack-detection-log", "idmefv2"), info("incident", "iodef")))
	req := nodes[8]

	findEventually(t, req, "attack-detection-log", "", eve, both)
	findEventually(t, req, "attack-detection-log", "eve", eve)
	findEventually(t, req, "incident", "iodef", iodef, both)
	findEventually(t, req, "blacklist", "")

	// A removed offer disappears at once: the provider no longer signs it.
	both.setOffers(offer(t, both, "c", info("incident", "iodef")))
	findEventually(t, req, "attack-detection-log", "", eve)

	// A provider that is gone is not shown: its offers cannot be fetched.
	iodef.dir.Close()
	iodef.h.Close()
	findEventually(t, req, "incident", "iodef", both)

	// Validation of a known peer.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, err := req.dir.Peer(ctx, eve.h.ID())
	if err != nil || len(p.Offers) != 1 || p.Offers[0].ID != "a" {
		t.Fatalf("Peer: %+v, %v", p, err)
	}
}

func TestForgedOffersNeverShown(t *testing.T) {
	boot := newNode(t, nil)
	bi := []peer.AddrInfo{{ID: boot.h.ID(), Addrs: boot.h.Addrs()}}
	honest, forger, req := newNode(t, bi), newNode(t, bi), newNode(t, bi)
	honest.setOffers(offer(t, honest, "h", info("blacklist", "syslog")))
	forger.setOffers(offer(t, forger, "f", info("blacklist", "syslog")))
	// The forger serves offers signed by another key (the honest node's offer re-signed by a
	// stranger) in place of its own.
	k, _, _ := crypto.GenerateEd25519Key(nil)
	stranger, _ := protocol.NewIdentity(k)
	forger.h.SetStreamHandler(ProtocolOffers, func(st network.Stream) {
		defer st.Close()
		b, _ := protocol.SealOffers(stranger, []*protocol.Offer{offer(t, forger, "f", info("blacklist", "syslog"))}, time.Now(), time.Hour)
		st.Write(b)
	})
	findEventually(t, req, "blacklist", "syslog", honest)
}

func TestStaleOffersRefused(t *testing.T) {
	n := newNode(t, nil)
	o := offer(t, n, "x", info("blacklist", "syslog"))
	b, err := protocol.SealOffers(n.id, []*protocol.Offer{o}, time.Now().Add(-2*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := protocol.OpenOffers(b, n.h.ID(), time.Now()); !errors.Is(err, protocol.ErrStaleOffers) {
		t.Fatalf("stale offers: %v", err)
	}
}

func TestNoPeersIsAnErrorNotAHang(t *testing.T) {
	alone := newNode(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := alone.dir.Find(ctx, "incident", ""); !errors.Is(err, ErrNoPeers) {
		t.Fatalf("Find with no peers: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("Find with no peers took %s", time.Since(start))
	}
}
