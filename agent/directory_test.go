package agent

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"

	"github.com/ssanet/ssanet/protocol"
)

func TestDirectoryConfig(t *testing.T) {
	const member = "12D3KooWDeeTJ6RokbyR3WU534rNkaA4t9G4Cp1YPTmeX5XPFzUC"
	tests := []struct {
		name string
		edit func(*Config)
		want string // a part of the error; empty: valid
	}{
		{"default", func(*Config) {}, ""},
		{"ssanet", func(c *Config) { c.Directory = "ssanet" }, ""},
		{"amino", func(c *Config) { c.Directory, c.DirectoryCommunity = "amino", "cert-example" }, ""},
		{"amino as a client", func(c *Config) { c.Directory, c.DirectoryCommunity, c.DHTMode = "amino", "cert-example", "client" }, ""},
		{"unknown", func(c *Config) { c.Directory = "ipfs" }, `directory must be ssanet (the private DHT, default) or amino (the public IPFS DHT), not "ipfs"`},
		{"amino without community", func(c *Config) { c.Directory = "amino" }, "directory: amino needs directory-community"},
		// The allow-list and the roster are enforced per protocol with the public directory.
		{"amino with allow", func(c *Config) {
			c.Directory, c.DirectoryCommunity, c.Allow = "amino", "cert-example", []string{member}
		}, ""},
		{"amino with a roster", func(c *Config) {
			c.Directory, c.DirectoryCommunity, c.Community = "amino", "cert-example", "roster.cbor"
		}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Contact = protocol.Participant{Name: "n", Affiliation: "o"}
			tc.edit(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("valid config refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v; want an error with %q", err, tc.want)
			}
		})
	}
}

// TestAminoAgents runs two agents with directory: amino on loopback: they speak the public
// DHT's protocol, and the requester finds the provider's offer under the community's keys.
func TestAminoAgents(t *testing.T) {
	amino := func(c *Config) { c.Directory, c.DirectoryCommunity = "amino", "cert-example" }
	prov := newTestAgent(t, "prov", amino)
	req := newTestAgent(t, "req", func(c *Config) {
		amino(c)
		c.Bootstrap = []string{fmt.Sprintf("%s/p2p/%s", prov.Host().Addrs()[0], prov.ID())}
	})
	if ps := prov.Host().Mux().Protocols(); !slices.Contains(ps, libp2pprotocol.ID("/ipfs/kad/1.0.0")) ||
		slices.Contains(ps, libp2pprotocol.ID("/ssanet/kad/1.0.0")) {
		t.Fatalf("an agent with directory: amino serves %v; want /ipfs/kad/1.0.0, not /ssanet/kad/1.0.0", ps)
	}
	addOffer(t, prov, func(o *protocol.Offer) { o.Terms.Participants.Provider.PeerID = prov.ID().String() })
	prov.dir.Readvertise()
	o, err := protocol.ParseOfferYAML(protocol.ExampleProvider, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	in := o.Terms.Information[0]
	waitFor(t, 20*time.Second, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ps, err := req.Discover(ctx, in.Type, in.Format)
		return err == nil && len(ps) == 1 && ps[0].PeerID == prov.ID(), fmt.Sprintf("%+v, %v", ps, err)
	})
}
