package agent

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ssanet/ssanet/protocol"
)

// TestMethodUnsupported: an agent refuses, during negotiation, a method it cannot honour
// (method-unsupported, naming each component): the provider when it answers a request, the
// requester when it checks a proposal, automatically or when its operator approves.
func TestMethodUnsupported(t *testing.T) {
	type want struct{ component, refuser string }
	for _, tc := range []struct {
		name            string
		prov, req       func(*Config)
		offer           func(*protocol.Offer)
		tmpl            func(*protocol.SSA)
		manual          bool
		want            []want
		refusedByTheReq bool
	}{
		{name: "the provider: ftp over ipsec",
			offer: func(o *protocol.Offer) { o.Terms.Method = protocol.Method{} },
			tmpl: func(s *protocol.SSA) {
				s.Method = protocol.Method{Protocols: []string{"ftp"}, Security: []string{"ipsec"}}
			},
			want: []want{{"method.protocols", "provider"}, {"method.security", "provider"}}},
		{name: "the provider: a security it is not configured with",
			prov: func(c *Config) { c.Security = []string{"tls"} },
			tmpl: func(s *protocol.SSA) { s.Method.Security = []string{"noise"} },
			want: []want{{"method.security", "provider"}}},
		{name: "the requester, automatically",
			req:  func(c *Config) { c.Security = []string{"noise"} },
			tmpl: func(s *protocol.SSA) { s.Method.Security = []string{"tls"} },
			want: []want{{"method.security", "requester"}}, refusedByTheReq: true},
		{name: "the requester, when its operator approves",
			req:    func(c *Config) { c.Security, c.Accept = []string{"noise"}, "manual" },
			tmpl:   func(s *protocol.SSA) { s.Method.Security = []string{"tls"} },
			manual: true,
			want:   []want{{"method.security", "requester"}}, refusedByTheReq: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			prov := newTestAgent(t, "provider", tc.prov)
			req := newTestAgent(t, "requester", tc.req)
			addOffer(t, prov, tc.offer)
			tmpl := requestTemplate(t)
			tc.tmpl(tmpl)
			rec, err := req.Request(ctx, addrInfo(prov), tmpl)
			if err != nil {
				t.Fatal(err)
			}
			if tc.manual {
				waitState(t, req, rec.SSAID, protocol.StateProposalReceived)
				if rec, err = req.Decide(ctx, rec.SSAID, Approve, ""); err != nil {
					t.Fatal(err)
				}
			}
			waitState(t, req, rec.SSAID, protocol.StateRejected)
			waitState(t, prov, rec.SSAID, protocol.StateRejected)
			if rec, err = req.Negotiation(rec.SSAID); err != nil {
				t.Fatal(err)
			}
			var got []want
			for _, r := range rec.Reasons {
				if r.Code != protocol.CodeMethodUnsupported {
					t.Fatalf("reason %v, want %s", r, protocol.CodeMethodUnsupported)
				}
				refuser := "provider"
				if strings.Contains(r.Text, "the requester cannot") {
					refuser = "requester"
				}
				got = append(got, want{r.Component, refuser})
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("reasons %v, want %v", rec.Reasons, tc.want)
			}
			if _, err := req.store.Agreement(rec.SSAID); err == nil {
				t.Fatal("the requester holds an agreement")
			}
		})
	}
}

// TestMethodFilledByTheMeet: the provider's proposal lists its addresses as method.access,
// and what it supports where neither side listed anything.
func TestMethodFilledByTheMeet(t *testing.T) {
	tmpl := requestTemplate(t)
	tmpl.Method = protocol.Method{}
	prov := newTestAgent(t, "provider", func(c *Config) { c.Security = []string{"tls", "noise"} })
	req := newTestAgent(t, "requester", nil)
	addOffer(t, prov, func(o *protocol.Offer) { o.Terms.Method = protocol.Method{} })
	rec, err := req.Request(context.Background(), addrInfo(prov), tmpl)
	if err != nil || rec.State != protocol.StateApproved {
		t.Fatalf("%+v, %v", rec, err)
	}
	s, err := req.store.Agreement(rec.SSAID)
	if err != nil {
		t.Fatal(err)
	}
	want := protocol.Method{Protocols: []string{ProtocolExchange}, Security: []string{"tls", "noise"}, Access: prov.Addrs()}
	if len(want.Access) == 0 || !slices.Equal(s.Method.Protocols, want.Protocols) || !slices.Equal(s.Method.Security, want.Security) ||
		!slices.Equal(s.Method.Access, want.Access) {
		t.Fatalf("agreed method %+v, want %+v", s.Method, want)
	}
}

// TestDeliveryOverUnagreedMethod: an SSA that lists tls only, between agents whose
// connection is secured by noise (the requester dialled, noise first): the provider sends
// nothing over it, counts it and says why in its report; a batch that comes over it anyway is
// refused by the requester and kept as evidence of a violation.
func TestDeliveryOverUnagreedMethod(t *testing.T) {
	ctx := context.Background()
	tmpl := requestTemplate(t)
	tmpl.Policy.Filtering = nil
	tmpl.Schedule.Start = protocol.FromTime(time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC))
	tmpl.Method.Security = []string{"tls"}
	prov, req, rec := agreedPair(t, tmpl)
	for _, c := range req.Host().Network().ConnsToPeer(prov.ID()) {
		if sec := c.ConnState().Security; sec != noise.ID {
			t.Fatalf("the connection is secured by %q, want %s (the requester's first)", sec, noise.ID)
		}
	}
	st, err := prov.Ingest(ctx, protocol.FormatEVE, bytes.NewReader(sampleEVE(t)))
	if err != nil || st.Queued[rec.SSAID] == 0 {
		t.Fatalf("ingest: %+v, %v", st, err)
	}
	waitFor(t, 10*time.Second, func() (bool, string) {
		why := prov.deliver.heldWhy(rec.SSAID)
		return strings.Contains(why, "secured by noise") && testutil.ToFloat64(prov.counts.heldMethod) > 0,
			fmt.Sprintf("delivery held: %q, counted %v", why, testutil.ToFloat64(prov.counts.heldMethod))
	})
	if in, err := req.store.InboxState(rec.SSAID); err != nil || in.Last != 0 {
		t.Fatalf("the requester holds %+v, %v; want nothing", in, err)
	}
	as, err := req.Monitor(ctx, rec.SSAID)
	if err != nil {
		t.Fatal(err)
	}
	if as.Verdict != VerdictDegraded || as.Provider == nil || !strings.Contains(as.Provider.DeliveryHeld, "method.security (tls)") {
		t.Fatalf("assessment %s %v, report %+v", as.Verdict, as.Reasons, as.Provider)
	}

	// A batch that comes anyway: refused, not stored, evidence of a violation.
	run := req.mgr.run(rec.SSAID)
	b := &protocol.Batch{SSAID: rec.SSAID, SSPHash: run.ssp.Hash(), First: 1, Format: protocol.FormatEVE,
		Sent: time.Now().UnixMilli(), Records: [][]byte{[]byte(`{"event_type":"alert"}`)}}
	sealed, err := protocol.SealBatch(prov.self, b)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		proto   string
		conn    network.ConnectionState
		refused bool
	}{
		{"noise", ProtocolExchange, network.ConnectionState{Security: noise.ID, Transport: "tcp"}, true},
		{"another protocol", "/ssanet/exchange/9.0.0", network.ConnectionState{Security: libp2ptls.ID, Transport: "tcp"}, true},
		{"tls", ProtocolExchange, network.ConnectionState{Security: libp2ptls.ID, Transport: "tcp"}, false},
		{"quic", ProtocolExchange, network.ConnectionState{Transport: "quic-v1"}, false},
	} {
		c, err := req.receiver.checkBatch(sealed, prov.ID(), libp2pprotocol.ID(tc.proto), tc.conn)
		if err != nil || (c.refused != "") != tc.refused || c.offMethod != tc.refused {
			t.Fatalf("%s: refused %q (method %v), %v; want refused %v", tc.name, c.refused, c.offMethod, err, tc.refused)
		}
	}
	c, _ := req.receiver.checkBatch(sealed, prov.ID(), ProtocolExchange, network.ConnectionState{Security: noise.ID, Transport: "tcp"})
	ack, err := req.receiver.storeBatch(c, prov.ID())
	if err != nil || ack.Error == "" || ack.Last != 0 {
		t.Fatalf("ack %+v, %v; want a refusal", ack, err)
	}
	if in, err := req.store.InboxState(rec.SSAID); err != nil || in.Last != 0 {
		t.Fatalf("the requester holds %+v, %v; want nothing", in, err)
	}
	if got := testutil.ToFloat64(req.counts.receive.offMethod); got != 1 {
		t.Fatalf("%v records refused for their method, want 1", got)
	}
	as, err = req.Monitor(ctx, rec.SSAID)
	if err != nil {
		t.Fatal(err)
	}
	if as.Verdict != VerdictViolated || len(as.Evidence) != 1 || !slices.ContainsFunc(as.Reasons, func(r string) bool {
		return strings.Contains(r, "1 batches came over a protocol or connection security")
	}) {
		t.Fatalf("assessment %s %v, %d evidence", as.Verdict, as.Reasons, len(as.Evidence))
	}
}

// TestMethodBreach: which streams a method allows.
func TestMethodBreach(t *testing.T) {
	tcp := func(sec string) network.ConnectionState {
		return network.ConnectionState{Security: libp2pprotocol.ID(sec), Transport: "tcp"}
	}
	for _, tc := range []struct {
		name   string
		m      protocol.Method
		proto  string
		conn   network.ConnectionState
		breach string // a part of the breach, or "" for none
	}{
		{"listed by name", protocol.Method{Protocols: []string{ProtocolExchange}, Security: []string{"noise"}}, ProtocolExchange, tcp("/noise"), ""},
		{"listed by ID", protocol.Method{Security: []string{"/tls/1.0.0"}}, ProtocolExchange, tcp("/tls/1.0.0"), ""},
		{"nothing listed", protocol.Method{}, "/x/1.0.0", tcp("/noise"), ""},
		{"QUIC is tls", protocol.Method{Security: []string{"tls"}}, ProtocolExchange, network.ConnectionState{Transport: "quic-v1"}, ""},
		{"QUIC is not noise", protocol.Method{Security: []string{"noise"}}, ProtocolExchange, network.ConnectionState{Transport: "quic-v1"}, "secured by tls (quic-v1)"},
		{"another protocol", protocol.Method{Protocols: []string{"ftp"}}, ProtocolExchange, tcp("/noise"), "over /ssanet/exchange/1.0.0, which the SSA's method.protocols (ftp)"},
		{"another security", protocol.Method{Security: []string{"tls", "ipsec"}}, ProtocolExchange, tcp("/noise"), "secured by noise (tcp), which the SSA's method.security (tls, ipsec)"},
		{"no security", protocol.Method{Security: []string{"tls"}}, ProtocolExchange, network.ConnectionState{Transport: "tcp"}, "secured by none"},
		{"an unknown security", protocol.Method{Security: []string{"tls"}}, ProtocolExchange, tcp("/x"), "secured by /x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, security := methodBreach(tc.m, libp2pprotocol.ID(tc.proto), tc.conn)
			if (got == "") != (tc.breach == "") || !strings.Contains(got, tc.breach) || security != strings.Contains(tc.breach, "secured by") {
				t.Fatalf("breach %q (security %v), want %q", got, security, tc.breach)
			}
		})
	}
}

// TestConfigSecurity: the security key takes noise and tls, once each; a QUIC address needs tls.
func TestConfigSecurity(t *testing.T) {
	for _, tc := range []struct {
		name     string
		security []string
		listen   []string
		err      string
	}{
		{"default", nil, []string{"/ip4/127.0.0.1/udp/0/quic-v1"}, ""},
		{"noise over TCP", []string{"noise"}, []string{"/ip4/127.0.0.1/tcp/0"}, ""},
		{"tls over QUIC", []string{"tls"}, []string{"/ip4/127.0.0.1/udp/0/quic-v1"}, ""},
		{"noise over QUIC", []string{"noise"}, []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}, "is QUIC, whose handshake is TLS"},
		{"unknown", []string{"noise", "ipsec"}, []string{"/ip4/127.0.0.1/tcp/0"}, `"ipsec" is not a connection security`},
		{"twice", []string{"tls", "tls"}, []string{"/ip4/127.0.0.1/tcp/0"}, `"tls" is listed twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Security, c.Listen = tc.security, tc.listen
			err := c.Validate()
			if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("%v, want %q", err, tc.err)
			}
		})
	}
}

// TestRevisionMethodUnsupported: a revision whose method the requester cannot honour is
// refused (method-unsupported); the version in force stays.
func TestRevisionMethodUnsupported(t *testing.T) {
	ctx := context.Background()
	prov := newTestAgent(t, "provider", nil)
	req := newTestAgent(t, "requester", func(c *Config) { c.Security = []string{"noise"} })
	addOffer(t, prov, nil)
	rec, err := req.Request(ctx, addrInfo(prov), requestTemplate(t))
	if err != nil || rec.State != protocol.StateApproved {
		t.Fatalf("%+v, %v", rec, err)
	}
	waitState(t, prov, rec.SSAID, protocol.StateApproved)
	s, err := prov.store.Agreement(rec.SSAID)
	if err != nil {
		t.Fatal(err)
	}
	v2 := s.Clone()
	v2.Method.Security = []string{"tls"}
	r2, err := prov.Revise(ctx, rec.SSAID, v2)
	if err != nil {
		t.Fatal(err)
	}
	if r2.SSAID != rec.SSAID || len(r2.Reasons) != 1 || r2.Reasons[0].Code != protocol.CodeMethodUnsupported ||
		r2.Reasons[0].Component != "method.security" {
		t.Fatalf("revision to tls only: %s %s %v; want %s in force, refused with method-unsupported", r2.State, r2.SSAID, r2.Reasons, rec.SSAID)
	}
	waitState(t, req, rec.SSAID, protocol.StateApproved)
	if in, err := req.store.Agreement(rec.SSAID); err != nil || !slices.Equal(in.Method.Security, []string{"noise", "tls"}) {
		t.Fatalf("the requester's agreement in force: %+v, %v", in, err)
	}
}
