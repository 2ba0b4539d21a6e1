package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ssanet/ssanet/discovery"
	"github.com/ssanet/ssanet/protocol"
)

// aminoHome is an initialised home, not started, of an agent with directory: amino (in the
// roster's community if community), its config then edited by edit.
func aminoHome(t *testing.T, name string, community bool, edit func(*Config)) rosterHome {
	t.Helper()
	h := initRosterHome(t, name, community)
	path := filepath.Join(h.home, ConfigFile)
	c, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	c.Directory, c.DirectoryCommunity = "amino", "cert-example"
	c.RetryInterval = Duration(200 * time.Millisecond)
	if edit != nil {
		edit(&c)
	}
	if err := WriteConfig(path, c); err != nil {
		t.Fatal(err)
	}
	return h
}

// bootstrapTo is an edit that joins the public directory through a.
func bootstrapTo(a *Agent) func(*Config) {
	return func(c *Config) { c.Bootstrap = []string{fmt.Sprintf("%s/p2p/%s", a.Host().Addrs()[0], a.ID())} }
}

// refusedOn is how many streams of proto a refused for reason.
func refusedOn(a *Agent, proto, reason string) float64 {
	return testutil.ToFloat64(a.counts.refusedMessages.WithLabelValues(proto, reason))
}

// streamRefused opens a stream of proto from from to p, sends the start of a frame and reads:
// the error it reads (nil if the peer answered or closed the stream).
func streamRefused(from *Agent, p peer.ID, proto libp2pprotocol.ID) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := openMemberStream(ctx, from.host, nil, p, proto)
	if err != nil {
		return err
	}
	defer st.Reset()
	if err := st.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	if _, err := st.Write([]byte{0x80}); err != nil {
		return err
	}
	_, err = bufio.NewReader(st).ReadByte()
	return err
}

// joinAmino gives prov an offer, starts the member from hm connected to prov, and a stranger
// (no community, no allow-list) that joins the public directory through prov, and waits until
// prov holds the stranger's connection.
func joinAmino(t *testing.T, prov *Agent, hm rosterHome) (member, stranger *Agent) {
	t.Helper()
	addOffer(t, prov, func(o *protocol.Offer) { o.Terms.Participants.Provider.PeerID = prov.ID().String() })
	member = reopen(t, hm.home)
	if err := connect(member, prov); err != nil {
		t.Fatal(err)
	}
	stranger = reopen(t, aminoHome(t, "stranger", false, bootstrapTo(prov)).home)
	waitFor(t, 10*time.Second, func() (bool, string) {
		return connectedTo(prov, stranger.ID()), "the stranger did not connect through the directory"
	})
	return member, stranger
}

// requestRefused asks prov for an SSA from req, and checks that prov refused it: the request
// ends failed, not authorised.
func requestRefused(t *testing.T, req, prov *Agent) {
	t.Helper()
	rec, err := req.Request(context.Background(), addrInfo(prov), requestTemplate(t))
	if err != nil || rec.State != protocol.StateFailed || len(rec.Reasons) == 0 || rec.Reasons[0].Code != protocol.CodeNotAuthorized {
		t.Fatalf("request of a peer outside the community: %+v, %v; want failed, not-authorized", rec, err)
	}
}

// TestAminoAllowListPerProtocol: with the public directory and an allow-list, a stranger
// connected through the DHT stays connected but cannot negotiate, deliver, ask for monitoring
// or fetch offers: each stream is refused at open with the allow-list's refusal, counted and
// said; the agent opens none to it. A member can. A reload that drops the member applies at
// once: its open ssanet stream is reset, new ones are refused, its connection stays; the peer
// added can fetch the offers.
func TestAminoAllowListPerProtocol(t *testing.T) {
	hm := aminoHome(t, "member", false, nil)
	prov := reopen(t, aminoHome(t, "prov", false, func(c *Config) { c.Allow = []string{hm.id.PeerID().String()} }).home)
	member, stranger := joinAmino(t, prov, hm)
	ctx := context.Background()

	// The stranger: refused on each protocol, still connected (for the DHT).
	if _, err := stranger.dir.FetchOffers(ctx, prov.ID()); !errors.Is(err, discovery.ErrOffersRefused) {
		t.Fatalf("a stranger fetches the offers: %v; want %v", err, discovery.ErrOffersRefused)
	}
	requestRefused(t, stranger, prov)
	for _, proto := range []libp2pprotocol.ID{ProtocolExchange, ProtocolMonitor, ProtocolNegotiate} {
		if err := streamRefused(stranger, prov.ID(), proto); !errors.Is(err, ErrStreamRefused) {
			t.Errorf("a stranger's %s stream: %v; want %v", proto, err, ErrStreamRefused)
		}
	}
	for _, proto := range []string{"offers", "negotiate", "exchange", "monitor"} {
		if n := refusedOn(prov, proto, "allow_list"); n < 1 {
			t.Errorf("%s streams refused: %v, want at least 1", proto, n)
		}
	}
	if !connectedTo(prov, stranger.ID()) {
		t.Error("the stranger's connection was closed: the public directory needs it")
	}
	// The provider opens no ssanet stream to the stranger, nor asks its offers.
	if _, err := prov.dir.FetchOffers(ctx, stranger.ID()); !errors.Is(err, discovery.ErrNotAllowed) {
		t.Errorf("offers fetched from a stranger: %v; want %v", err, discovery.ErrNotAllowed)
	}
	for _, proto := range []libp2pprotocol.ID{ProtocolNegotiate, ProtocolExchange, ProtocolMonitor} {
		if _, err := openMemberStream(ctx, prov.host, prov.member, stranger.ID(), proto); !errors.Is(err, ErrUnreachable) || !errors.Is(err, ErrNotAllowed) {
			t.Errorf("%s stream opened to a stranger: %v; want %v, %v", proto, err, ErrUnreachable, ErrNotAllowed)
		}
	}

	// The member: negotiates, fetches the offers.
	if _, err := member.dir.FetchOffers(ctx, prov.ID()); err != nil {
		t.Fatalf("the member cannot fetch the offers: %v", err)
	}
	rec, err := member.Request(ctx, addrInfo(prov), requestTemplate(t))
	if err != nil || rec.State != protocol.StateApproved {
		t.Fatalf("the member's request: %+v, %v; want approved", rec, err)
	}

	// A reload drops the member for the stranger: the member's open monitor stream is reset,
	// its new streams refused; its connection stays.
	open, err := openMemberStream(ctx, member.host, nil, prov.ID(), ProtocolMonitor)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Reset()
	if err := open.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := open.Write([]byte{0x80}); err != nil { // the start of a frame length: the handler waits for the rest
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() (bool, string) {
		for _, c := range prov.host.Network().ConnsToPeer(member.ID()) {
			if slices.ContainsFunc(c.GetStreams(), func(s network.Stream) bool {
				return s.Protocol() == ProtocolMonitor
			}) {
				return true, ""
			}
		}
		return false, "the member's monitor stream is not served"
	})
	editConfig(t, prov, func(c *Config) { c.Allow = []string{stranger.ID().String()} })
	if _, err := prov.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(open).ReadByte(); !errors.Is(err, ErrStreamRefused) {
		t.Errorf("the dropped member's open stream: %v; want %v", err, ErrStreamRefused)
	}
	if _, err := member.dir.FetchOffers(ctx, prov.ID()); !errors.Is(err, discovery.ErrOffersRefused) {
		t.Errorf("the dropped member fetches the offers: %v; want %v", err, discovery.ErrOffersRefused)
	}
	requestRefused(t, member, prov)
	if !connectedTo(prov, member.ID()) {
		t.Error("the dropped member's connection was closed: with the public directory it stays")
	}
	if _, err := stranger.dir.FetchOffers(ctx, prov.ID()); err != nil {
		t.Errorf("the peer added by the reload cannot fetch the offers: %v", err)
	}
}

// TestAminoOpenToAllWarned: with the public directory and neither allow nor community, the
// agent warns at start that anyone may negotiate; with an allow-list it does not, until a
// reload empties it.
func TestAminoOpenToAllWarned(t *testing.T) {
	const warning = "any peer of the public IPFS network that finds this agent may fetch its offers and negotiate"
	for _, tc := range []struct {
		name     string
		allow    []string
		reloaded bool // the allow-list emptied by a reload
		warn     bool
	}{
		{"no allow-list", nil, false, true},
		{"allow-list", []string{newRawPeer(t).h.ID().String()}, false, false},
		{"allow-list emptied by a reload", []string{newRawPeer(t).h.ID().String()}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs syncBuffer
			a := newTestAgentWith(t, "open", func(c *Config) {
				c.Directory, c.DirectoryCommunity, c.Allow = "amino", "cert-example", tc.allow
			}, Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
			if tc.reloaded {
				editConfig(t, a, func(c *Config) { c.Allow = nil })
				if _, err := a.Reload(); err != nil {
					t.Fatal(err)
				}
			}
			if got := strings.Contains(logs.text(), warning); got != tc.warn {
				t.Errorf("warned %v, want %v:\n%s", got, tc.warn, logs.text())
			}
		})
	}
}

// TestAminoRosterPerProtocol: with the public directory and a community roster, a peer outside
// the roster connected through the DHT cannot push a roster or negotiate; a member can; a new
// roster that removes the member applies at once to the streams it opens next, not to its
// connection.
func TestAminoRosterPerProtocol(t *testing.T) {
	hp, hm := aminoHome(t, "prov", true, nil), aminoHome(t, "member", true, nil)
	exp := time.Now().Add(time.Hour)
	v1 := makeRoster(t, 1, 1, exp, []rosterHome{hp}, []rosterHome{hp, hm}, []rosterHome{hp})
	for _, h := range []rosterHome{hp, hm} {
		if err := os.WriteFile(filepath.Join(h.home, "roster.cbor"), v1, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	prov := reopen(t, hp.home)
	member, stranger := joinAmino(t, prov, hm)

	if err := streamRefused(stranger, prov.ID(), ProtocolRoster); !errors.Is(err, ErrStreamRefused) {
		t.Errorf("a stranger's roster stream: %v; want %v", err, ErrStreamRefused)
	}
	requestRefused(t, stranger, prov)
	for _, proto := range []string{"roster", "negotiate"} {
		if n := refusedOn(prov, proto, "community_roster"); n < 1 {
			t.Errorf("%s streams refused: %v, want at least 1", proto, n)
		}
	}
	rec, err := member.Request(context.Background(), addrInfo(prov), requestTemplate(t))
	if err != nil || rec.State != protocol.StateApproved {
		t.Fatalf("the member's request: %+v, %v; want approved", rec, err)
	}

	if _, err := prov.PublishRoster(makeRoster(t, 2, 1, exp, []rosterHome{hp}, []rosterHome{hp}, []rosterHome{hp})); err != nil {
		t.Fatal(err)
	}
	requestRefused(t, member, prov)
	if !connectedTo(prov, member.ID()) {
		t.Error("the removed member's connection was closed: with the public directory it stays")
	}
}
