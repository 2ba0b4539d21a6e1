package agent

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/ssanet/ssanet/protocol"
)

// allowListed starts one agent per name, in the order given, each with the others in its
// allow-list; edit adjusts each one's configuration before it starts, knowing those started.
func allowListed(t *testing.T, names []string, edit func(name string, started map[string]*Agent, c *Config)) map[string]*Agent {
	t.Helper()
	homes := map[string]string{}
	ids := map[string]peer.ID{}
	cfgs := map[string]Config{}
	for _, name := range names {
		home := filepath.Join(t.TempDir(), name)
		cfg := DefaultConfig()
		cfg.Contact = protocol.Participant{Name: name, Affiliation: name + " org"}
		cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
		cfg.RetryInterval = Duration(200 * time.Millisecond)
		cfg.MDNS = false
		cfg.MessageTimeout = Duration(5 * time.Second)
		id, err := Init(home, cfg)
		if err != nil {
			t.Fatal(err)
		}
		homes[name], ids[name], cfgs[name] = home, id, cfg
	}
	out := map[string]*Agent{}
	for _, name := range names {
		cfg := cfgs[name]
		for _, other := range names {
			if other != name {
				cfg.Allow = append(cfg.Allow, ids[other].String())
			}
		}
		if edit != nil {
			edit(name, out, &cfg)
		}
		if err := WriteConfig(filepath.Join(homes[name], ConfigFile), cfg); err != nil {
			t.Fatal(err)
		}
		a, err := New(homes[name], Options{Logger: testLogger(t, name)})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Cleanup(func() { a.Close() })
		out[name] = a
	}
	return out
}

// TestRelayedNegotiationAndDelivery: a provider that no one can dial (it listens on nothing
// once it holds a slot at the community's relay) negotiates with a requester and delivers
// its records over the relayed connection; `ssanet peers` shows the connection as relayed,
// through the relay. A peer outside the allow-list can neither reserve a slot at the relay
// nor reach the provider through it.
func TestRelayedNegotiationAndDelivery(t *testing.T) {
	ctx := context.Background()
	ag := allowListed(t, []string{"relay", "provider", "requester"}, func(name string, started map[string]*Agent, c *Config) {
		switch name {
		case "relay":
			c.Reachability = "public"
			c.Relay.Serve = true
		case "provider":
			c.Reachability = "private"
			c.Relays = []string{started["relay"].Addrs()[0]}
		}
	})
	relay, prov, req := ag["relay"], ag["provider"], ag["requester"]
	// libp2p announces relayed addresses only through relays with public addresses: on
	// loopback the requester is told the provider's (as the directory would tell it).
	via := ma.StringCast(relay.Addrs()[0] + "/p2p-circuit/p2p/" + prov.ID().String())
	waitFor(t, 20*time.Second, func() (bool, string) { // the provider holds a slot at the relay
		cctx, cancel := context.WithTimeout(network.WithAllowLimitedConn(ctx, "test"), 5*time.Second)
		defer cancel()
		err := req.Host().Connect(cctx, peer.AddrInfo{ID: prov.ID(), Addrs: []ma.Multiaddr{via}})
		return err == nil, fmt.Sprintf("connect through the relay: %v", err)
	})
	if err := req.Host().Network().ClosePeer(prov.ID()); err != nil {
		t.Fatal(err)
	}
	req.Host().Peerstore().ClearAddrs(prov.ID())
	// From now on neither can dial the other (as behind two NATs): only the relay joins them.
	for _, a := range []*Agent{prov, req} {
		ln, ok := a.Host().Network().(interface{ ListenClose(...ma.Multiaddr) })
		if !ok {
			t.Fatalf("the host's network %T cannot close its listeners", a.Host().Network())
		}
		// Only the direct listeners: the circuit listener is what accepts relayed connections.
		direct := func(addr ma.Multiaddr) bool { _, err := addr.ValueForProtocol(ma.P_CIRCUIT); return err != nil }
		ln.ListenClose(slices.DeleteFunc(a.Host().Network().ListenAddresses(), func(addr ma.Multiaddr) bool { return !direct(addr) })...)
		if got := slices.DeleteFunc(a.Host().Network().ListenAddresses(), func(addr ma.Multiaddr) bool { return !direct(addr) }); len(got) > 0 {
			t.Fatalf("%s still listens on %v", a.ID(), got)
		}
	}

	tmpl := requestTemplate(t)
	tmpl.Policy.Filtering = nil
	tmpl.Schedule.Start = protocol.FromTime(time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC))
	addOffer(t, prov, nil)
	rec, err := req.Request(ctx, peer.AddrInfo{ID: prov.ID(), Addrs: []ma.Multiaddr{via}}, tmpl)
	if err != nil || rec.State != protocol.StateApproved {
		t.Fatalf("negotiation through the relay: %+v, %v", rec, err)
	}
	waitState(t, prov, rec.SSAID, protocol.StateApproved)
	st, err := prov.Ingest(ctx, protocol.FormatEVE, bytes.NewReader(sampleEVE(t)))
	if err != nil {
		t.Fatal(err)
	}
	n := uint64(st.Queued[rec.SSAID])
	if n == 0 {
		t.Fatalf("ingest queued nothing: %+v", st)
	}
	waitRecords(t, req, rec.SSAID, n)

	// The requester's view of the provider: connected, relayed, through the relay, limited.
	views, err := req.Peers()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(views, func(v PeerView) bool { return v.Peer == prov.ID().String() })
	if i < 0 {
		t.Fatalf("the requester does not list the provider: %+v", views)
	}
	v := views[i]
	if !v.Connected || v.Path != "relayed" || len(v.Connections) == 0 {
		t.Fatalf("provider seen as %+v, want connected and relayed", v)
	}
	for _, c := range v.Connections {
		if c.Relay != relay.ID().String() || !c.Limited {
			t.Fatalf("connection %+v, want limited through relay %s", c, relay.ID())
		}
	}

	// A stranger (not in any allow-list) can neither reserve a slot nor be relayed.
	stranger, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stranger.Close() })
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := client.Reserve(sctx, stranger, addrInfo(relay)); err == nil {
		t.Fatal("a peer outside the allow-list reserved a slot at the relay")
	}
	if err := stranger.Connect(sctx, peer.AddrInfo{ID: prov.ID(), Addrs: []ma.Multiaddr{via}}); err == nil {
		t.Fatal("a peer outside the allow-list reached the provider through the relay")
	}
}

// TestRelayDialFromListenPort: a private agent reaches its relay from the port it listens on,
// never from a new one, so that the relay observes the agent's external address for that port,
// which DCUtR hole punching needs (afterListen). Several agents: before the fix each one lost
// the race between autorelay's first dial and its listener only at times.
func TestRelayDialFromListenPort(t *testing.T) {
	names := []string{"relay", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8"}
	ag := allowListed(t, names, func(name string, started map[string]*Agent, c *Config) {
		c.Listen = []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
		if name == "relay" {
			c.Reachability = "public"
			c.Relay.Serve = true
			return
		}
		c.Reachability = "private"
		c.Relays = []string{started["relay"].Addrs()[0]}
	})
	relay := ag["relay"].ID()
	for _, name := range names[1:] {
		a := ag[name]
		waitFor(t, 10*time.Second, func() (bool, string) {
			conns := a.Host().Network().ConnsToPeer(relay)
			if len(conns) == 0 {
				return false, name + " has no connection to the relay"
			}
			return true, ""
		})
		listen := a.Host().Network().ListenAddresses()
		for _, c := range a.Host().Network().ConnsToPeer(relay) {
			if !slices.ContainsFunc(listen, c.LocalMultiaddr().Equal) {
				t.Errorf("%s reached the relay from %s, not from its listen address %v", name, c.LocalMultiaddr(), listen)
			}
		}
	}
}

// TestRelayACL: the relay reserves for, and relays between, members only.
func TestRelayACL(t *testing.T) {
	member, other, stranger := peer.ID("member"), peer.ID("other"), peer.ID("stranger")
	acl := relayACL{admits: func(p peer.ID) bool { return p == member || p == other }}
	for _, tc := range []struct {
		name      string
		src, dest peer.ID
		reserve   bool
		connect   bool
	}{
		{"members", member, other, true, true},
		{"stranger to member", stranger, member, false, false},
		{"member to stranger", member, stranger, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := acl.AllowReserve(tc.src, nil); got != tc.reserve {
				t.Errorf("AllowReserve(%s) = %v, want %v", tc.src, got, tc.reserve)
			}
			if got := acl.AllowConnect(tc.src, nil, tc.dest); got != tc.connect {
				t.Errorf("AllowConnect(%s, %s) = %v, want %v", tc.src, tc.dest, got, tc.connect)
			}
		})
	}
}

// TestReachConfig: the reachability keys are checked, and a relay without an allow-list or a
// roster is refused (it would be open to anyone).
func TestReachConfig(t *testing.T) {
	relayID := "12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf"
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string // "" valid, else a part of the error
	}{
		{"defaults", func(*Config) {}, ""},
		{"private with relays", func(c *Config) {
			c.Reachability = "private"
			c.Relays = []string{"/ip4/192.0.2.1/tcp/4001/p2p/" + relayID}
		}, ""},
		{"bad reachability", func(c *Config) { c.Reachability = "nat" }, "reachability must be"},
		{"relay without ID", func(c *Config) { c.Relays = []string{"/ip4/192.0.2.1/tcp/4001"} }, "must end in /p2p/"},
		{"open relay", func(c *Config) { c.Relay.Serve = true }, "needs an allow-list or a community roster"},
		{"community relay", func(c *Config) { c.Relay.Serve = true; c.Community = "roster.cbor" }, ""},
		{"member relay", func(c *Config) { c.Relay.Serve = true; c.Allow = []string{relayID} }, ""},
		{"negative data", func(c *Config) { c.Relay.Data = -1 }, "must not be negative"},
		{"unlimited and data", func(c *Config) { c.Relay.Unlimited = true; c.Relay.Data = MinRelayData }, "excludes"},
		{"data below a few batches", func(c *Config) { c.Relay.Data = MinRelayData - 1 }, "at least 524288 bytes"},
		{"data of a few batches", func(c *Config) { c.Relay.Data = MinRelayData }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.edit(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// TestRelayResources: the relay's limits follow relay.*, with defaults that let a
// negotiation through, and none when unlimited.
func TestRelayResources(t *testing.T) {
	def := RelayConfig{}.resources()
	if def.Limit == nil || def.Limit.Duration != time.Duration(DefaultRelayDuration) || def.Limit.Data != DefaultRelayData {
		t.Fatalf("default limit %+v", def.Limit)
	}
	set := RelayConfig{Duration: Duration(time.Minute), Data: 4096, MaxReservations: 3, MaxCircuits: 2}.resources()
	if set.Limit.Duration != time.Minute || set.Limit.Data != 4096 || set.MaxReservations != 3 || set.MaxCircuits != 2 {
		t.Fatalf("configured resources %+v, limit %+v", set, set.Limit)
	}
	if un := (RelayConfig{Unlimited: true}).resources(); un.Limit != nil {
		t.Fatalf("unlimited relay has limit %+v", un.Limit)
	}
}

// testLogger logs to t, for a test that fails to say what the agents did; SSANET_TEST_LOG=1.
func testLogger(t *testing.T, name string) *slog.Logger {
	if os.Getenv("SSANET_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})).With("agent", name)
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// TestRelayedMethod: a relayed connection whose security libp2p does not report keeps to an
// SSA's method only when that lists every security an agent may use.
func TestRelayedMethod(t *testing.T) {
	relayed := network.ConnectionState{Transport: relayedTransport}
	for _, tc := range []struct {
		security []string
		breach   bool
	}{
		{[]string{"noise", "tls"}, false},
		{nil, false},
		{[]string{"noise"}, true},
		{[]string{"tls"}, true},
	} {
		why, sec := methodBreach(protocol.Method{Security: tc.security}, ProtocolExchange, relayed)
		if (why != "") != tc.breach || (tc.breach && !sec) {
			t.Errorf("security %v: breach %q (security %v), want breach %v", tc.security, why, sec, tc.breach)
		}
	}
}

// TestRelayAdmitsRosterMembers: in a community, the relay serves the members of the roster
// held, not an allow-list; outside one, the allow-list's peers, and nobody when it is empty.
func TestRelayAdmitsRosterMembers(t *testing.T) {
	ha, hb, hc := initRosterHome(t, "a", true), initRosterHome(t, "b", true), initRosterHome(t, "c", true)
	hx := initRosterHome(t, "x", false)
	admins := []rosterHome{ha, hb, hc}
	v1 := makeRoster(t, 1, 2, time.Now().Add(time.Hour), admins, admins, []rosterHome{ha, hb})
	if err := os.WriteFile(filepath.Join(ha.home, "roster.cbor"), v1, 0o600); err != nil {
		t.Fatal(err)
	}
	a, x := reopen(t, ha.home), reopen(t, hx.home)
	for _, tc := range []struct {
		name  string
		agent *Agent
		peer  peer.ID
		want  bool
	}{
		{"member, in a community", a, hb.id.PeerID(), true},
		{"non-member, in a community", a, hx.id.PeerID(), false},
		{"anyone, no community and an empty allow-list", x, hb.id.PeerID(), false},
	} {
		if got := tc.agent.relayAdmits(tc.peer); got != tc.want {
			t.Errorf("%s: relayAdmits = %v, want %v", tc.name, got, tc.want)
		}
	}
}
