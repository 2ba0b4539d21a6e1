package agent

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ssanet/ssanet/protocol"
)

// text is what was written so far.
func (s *syncBuffer) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// refusingAgent is an agent whose allow-list holds one peer that is not the ones under test,
// logging into the returned buffer.
func refusingAgent(t *testing.T, name string, listen ...string) (*Agent, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	other := newRawPeer(t).h.ID()
	a := newTestAgentWith(t, name, func(c *Config) {
		c.Allow = []string{other.String()}
		if len(listen) > 0 {
			c.Listen = listen
		}
	}, Options{Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	return a, logs
}

// TestOpenStreamSaysWhy: the dialling side tells apart a peer whose allow-list refuses it
// (closed right after the handshake), one that does not speak ssanet, and one it cannot reach.
func TestOpenStreamSaysWhy(t *testing.T) {
	dialer := newTestAgent(t, "dialer", nil)
	refusing, _ := refusingAgent(t, "refusing")
	refusingQUIC, _ := refusingAgent(t, "refusing-quic", "/ip4/127.0.0.1/udp/0/quic-v1")
	plain := newRawPeer(t) // libp2p, no ssanet handler
	gone := newRawPeer(t)
	goneInfo := peer.AddrInfo{ID: gone.h.ID(), Addrs: gone.h.Addrs()}
	if err := gone.h.Close(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		to   peer.AddrInfo
		want error
	}{
		{name: "allow-list", to: addrInfo(refusing), want: ErrRefusedByPeer},
		{name: "allow-list over QUIC", to: addrInfo(refusingQUIC), want: ErrRefusedByPeer},
		{name: "not ssanet", to: peer.AddrInfo{ID: plain.h.ID(), Addrs: plain.h.Addrs()}, want: ErrNotSSAnet},
		{name: "unreachable", to: goneInfo, want: ErrUnreachable},
		{name: "ssanet agent", to: addrInfo(newTestAgent(t, "provider", nil))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dialer.host.Peerstore().AddAddrs(tc.to.ID, tc.to.Addrs, peerstore.TempAddrTTL)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			st, err := openStream(ctx, dialer.host, tc.to.ID, ProtocolNegotiate)
			if st != nil {
				st.Reset()
			}
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("openStream: %v, want %v", err, tc.want)
			}
			for _, other := range []error{ErrRefusedByPeer, ErrNotSSAnet, ErrUnreachable, ErrNoAnswer} {
				if other != tc.want && errors.Is(err, other) {
					t.Errorf("openStream: %v is also %v", err, other)
				}
			}
		})
	}
}

// TestAllowListRefusalLogged: the agent that refuses a peer outside its allow-list logs it
// (peer, address, reason) once per peer and minute however often it comes, and counts every
// refusal.
func TestAllowListRefusalLogged(t *testing.T) {
	refusing, logs := refusingAgent(t, "refusing")
	dialer := newTestAgent(t, "dialer", nil)
	dialer.host.Peerstore().AddAddrs(refusing.ID(), refusing.host.Addrs(), peerstore.TempAddrTTL)
	const attempts = 3
	for range attempts {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := openStream(ctx, dialer.host, refusing.ID(), ProtocolNegotiate)
		cancel()
		if !errors.Is(err, ErrRefusedByPeer) {
			t.Fatalf("openStream: %v, want %v", err, ErrRefusedByPeer)
		}
	}
	counted := func() float64 {
		return testutil.ToFloat64(refusing.counts.refusedConns.WithLabelValues(refusedAllowList))
	}
	// Each openStream connects twice before it calls it a refusal.
	waitFor(t, 5*time.Second, func() (bool, string) {
		return counted() >= 2*attempts, "refusals counted: " + logs.text()
	})
	var lines []string
	for _, l := range strings.Split(logs.text(), "\n") {
		if strings.Contains(l, `"msg":"connection refused"`) {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("%d refusal lines, want 1 (rate-limited):\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for _, want := range []string{`"peer":"` + dialer.ID().String() + `"`, `"addr":"/ip4/127.0.0.1/tcp/`,
		`"direction":"Inbound"`, `"reason":"allow-list"`, "allow-list"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("refusal line lacks %s: %s", want, lines[0])
		}
	}

	// Its own dial to a peer outside its allow-list is not made: counted, and said.
	refusing.host.Peerstore().AddAddrs(dialer.ID(), dialer.host.Addrs(), peerstore.TempAddrTTL)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := openStream(ctx, refusing.host, dialer.ID(), ProtocolNegotiate)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "own allow-list") {
		t.Errorf("dial outside the own allow-list: %v", err)
	}
	if n := testutil.ToFloat64(refusing.counts.refusedConns.WithLabelValues(refusedDial)); n < 1 {
		t.Errorf("dials not made counted %v times, want at least 1", n)
	}
}

// TestPeersShowsConnections: `ssanet peers` lists the peer of an agreement as connected, with
// the direction of the connection on each side, and its addresses.
func TestPeersShowsConnections(t *testing.T) {
	prov, req, _ := agreedPair(t, requestTemplate(t))
	for _, tc := range []struct {
		name      string
		a, other  *Agent
		direction string
	}{
		{name: "requester", a: req, other: prov, direction: "outbound"},
		{name: "provider", a: prov, other: req, direction: "inbound"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peers, err := tc.a.Peers()
			if err != nil {
				t.Fatal(err)
			}
			if len(peers) != 1 {
				t.Fatalf("peers: %+v, want only %s", peers, tc.other.ID())
			}
			p := peers[0]
			if p.Peer != tc.other.ID().String() || !p.Connected || len(p.Connections) == 0 ||
				p.Connections[0].Direction != tc.direction || p.Negotiations != 1 || !p.Allowed || p.LastError != "" {
				t.Errorf("peers: %+v, want %s connected %s, 1 negotiation, allowed, no error", p, tc.other.ID(), tc.direction)
			}
			if len(p.Addrs) == 0 || !strings.HasPrefix(p.Addrs[0], "/ip4/127.0.0.1/tcp/") {
				t.Errorf("addresses %v, want the loopback one", p.Addrs)
			}
		})
	}
}

// TestRequestToPeerThatCannotTakePart: a request to a peer that refuses this agent, or does
// not speak ssanet, ends at once (failed, with the reason); one to a peer that cannot be
// reached or does not answer waits to be sent again, and `ssanet peers` says why.
func TestRequestToPeerThatCannotTakePart(t *testing.T) {
	req := newTestAgent(t, "requester", func(c *Config) { c.MessageTimeout = Duration(time.Second) })
	refusing, logs := refusingAgent(t, "refusing")
	plain := newRawPeer(t)
	gone := newRawPeer(t)
	goneInfo := peer.AddrInfo{ID: gone.h.ID(), Addrs: gone.h.Addrs()}
	if err := gone.h.Close(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		to    peer.AddrInfo
		state protocol.State
		code  protocol.Code // of the reason a failed request ends with
		kind  string        // of the peer's last error
	}{
		{name: "allow-list", to: addrInfo(refusing), state: protocol.StateFailed, code: protocol.CodeNotAuthorized, kind: "refused"},
		{name: "not ssanet", to: peer.AddrInfo{ID: plain.h.ID(), Addrs: plain.h.Addrs()}, state: protocol.StateFailed,
			code: protocol.CodeNotSSAnetPeer, kind: "not-ssanet"},
		{name: "unreachable", to: goneInfo, state: protocol.StateRequestSent, kind: "unreachable"},
		{name: "no answer", to: blackHole(t), state: protocol.StateRequestSent, kind: "no-answer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			rec, err := req.Request(context.Background(), tc.to, requestTemplate(t))
			if err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("the request took %v, over the message timeout", took)
			}
			if rec.State != tc.state {
				t.Fatalf("state %s, want %s (reasons %v)", rec.State, tc.state, rec.Reasons)
			}
			if tc.state == protocol.StateFailed && (len(rec.Reasons) != 1 || rec.Reasons[0].Code != tc.code) {
				t.Errorf("reasons %v, want one of code %s", rec.Reasons, tc.code)
			}
			if stored, err := req.Negotiation(rec.SSAID); err != nil || stored.State != tc.state {
				t.Errorf("stored: %+v, %v; want %s", stored, err, tc.state)
			}
			peers, err := req.Peers()
			if err != nil {
				t.Fatal(err)
			}
			var found bool
			for _, p := range peers {
				if p.Peer == tc.to.ID.String() {
					found = true
					if p.LastErrorKind != tc.kind || p.LastError == "" || p.LastErrorAt.IsZero() {
						t.Errorf("peers: %+v, want last error of kind %s", p, tc.kind)
					}
				}
			}
			if !found {
				t.Errorf("peers does not list %s: %+v", tc.to.ID, peers)
			}
		})
	}
	if !strings.Contains(logs.text(), `"peer":"`+req.ID().String()+`"`) {
		t.Errorf("the refusing agent did not log the requester it refused:\n%s", logs.text())
	}
}
