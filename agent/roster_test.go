package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ssanet/ssanet/protocol"
)

// rosterHome is an initialised agent home, not started, and its identity.
type rosterHome struct {
	home string
	id   *protocol.Identity
}

func initRosterHome(t *testing.T, name string, community bool) rosterHome {
	t.Helper()
	home := filepath.Join(t.TempDir(), name)
	cfg := DefaultConfig()
	cfg.Contact = protocol.Participant{Name: name, Affiliation: name + " org"}
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.MDNS = false
	if community {
		cfg.Community = "roster.cbor"
	}
	if _, err := Init(home, cfg); err != nil {
		t.Fatal(err)
	}
	key, err := LoadKey(home)
	if err != nil {
		t.Fatal(err)
	}
	id, err := protocol.NewIdentity(key)
	if err != nil {
		t.Fatal(err)
	}
	return rosterHome{home: home, id: id}
}

// makeRoster is version v of community "test", expiring at expires, with admins (threshold
// k) and members, signed by signers, encoded.
func makeRoster(t *testing.T, v, k uint64, expires time.Time, admins, members, signers []rosterHome) []byte {
	t.Helper()
	r := &protocol.Roster{Community: "test", Version: v, Expires: protocol.FromTime(expires), Threshold: k}
	for _, a := range admins {
		r.Admins = append(r.Admins, a.id.PeerID())
	}
	for _, m := range members {
		r.Members = append(r.Members, protocol.Member{Peer: m.id.PeerID(), Roles: []protocol.MemberRole{protocol.RoleMember}})
	}
	r.Sort()
	s, err := protocol.NewSignedRoster(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, sg := range signers {
		if err := s.Sign(sg.id); err != nil {
			t.Fatal(err)
		}
	}
	b, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rosterVersion(a *Agent) uint64 {
	v, err := a.Community()
	if err != nil {
		return 0
	}
	return v.Version
}

// connect makes from dial to, and reports the error.
func connect(from, to *Agent) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := from.Host().Connect(ctx, addrInfo(to)); err != nil {
		return err
	}
	return nil
}

// connectedTo reports whether a holds a connection to p that stays up.
func connectedTo(a *Agent, p peer.ID) bool {
	return a.Host().Network().Connectedness(p) == network.Connected
}

// refusedBy is how many connections a refused for reason.
func refusedBy(a *Agent, reason string) float64 {
	return testutil.ToFloat64(a.counts.refusedConns.WithLabelValues(reason))
}

// TestRosterDistribution: three members of a community (admins, 2 of 3) connected in a chain
// A-B-C; a roster adding X, published at A, reaches C through B, and X then connects to C; a
// replayed older roster changes nothing; a roster removing X closes its connections
// everywhere; a member restarted holds the roster it had and gets the newer one on connecting.
func TestRosterDistribution(t *testing.T) {
	ha, hb, hc := initRosterHome(t, "a", true), initRosterHome(t, "b", true), initRosterHome(t, "c", true)
	hx := initRosterHome(t, "x", false)
	admins := []rosterHome{ha, hb, hc}
	exp := time.Now().Add(time.Hour)
	v1 := makeRoster(t, 1, 2, exp, admins, admins, []rosterHome{ha, hb})
	v2 := makeRoster(t, 2, 2, exp, admins, []rosterHome{ha, hb, hc, hx}, []rosterHome{hb, hc})
	v3 := makeRoster(t, 3, 2, exp, admins, admins, []rosterHome{ha, hc})
	for _, h := range admins {
		if err := os.WriteFile(filepath.Join(h.home, "roster.cbor"), v1, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	a, b, c, x := reopen(t, ha.home), reopen(t, hb.home), reopen(t, hc.home), reopen(t, hx.home)
	for _, m := range []*Agent{a, b, c} {
		if v := rosterVersion(m); v != 1 {
			t.Fatalf("%s holds version %d, want 1", m.ID(), v)
		}
	}
	if _, err := x.Community(); !errors.Is(err, ErrNoCommunity) {
		t.Fatalf("x outside any community: %v", err)
	}
	if err := connect(a, b); err != nil {
		t.Fatal(err)
	}
	if err := connect(b, c); err != nil {
		t.Fatal(err)
	}
	// X, not a member, is refused by C (and C refuses to dial it).
	_ = connect(x, c)
	waitFor(t, 5*time.Second, func() (bool, string) {
		return refusedBy(c, refusedRoster) == 1 && !connectedTo(x, c.ID()), "c has not refused x"
	})

	if _, err := a.PublishRoster(v2); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, 10*time.Second, func() (bool, string) {
		return rosterVersion(c) == 2 && rosterVersion(b) == 2, "b and c have not got version 2"
	})
	t.Logf("version 2 reached c through b in %v", time.Since(start))
	if st, err := c.Status(); err != nil || st.Roster == nil || st.Roster.Version != 2 || st.Roster.Members != 4 {
		t.Fatalf("c's status after version 2: %+v, %v; want roster version 2 with 4 members", st, err)
	}
	if err := connect(x, c); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() (bool, string) { return connectedTo(x, c.ID()), "x not connected to c" })

	// A replayed older roster changes nothing.
	if _, err := c.PublishRoster(v1); !errors.Is(err, protocol.ErrRosterStale) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("replay of version 1: %v, want %v", err, protocol.ErrRosterStale)
	}
	if v := rosterVersion(c); v != 2 {
		t.Fatalf("after the replay c holds version %d", v)
	}

	// Removing X closes its connection to C, which learns version 3 from B.
	if _, err := a.PublishRoster(v3); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() (bool, string) {
		return rosterVersion(c) == 3 && !connectedTo(c, x.ID()), "c still at an older version or connected to x"
	})
	_ = connect(x, c)
	waitFor(t, 5*time.Second, func() (bool, string) {
		return refusedBy(c, refusedRoster) >= 2 && !connectedTo(x, c.ID()), "c has not refused x again"
	})

	// B learned version 3 before C did, from A; a loaded machine may still be closing its
	// connection to X (or, once, redialling C) when C's refusal above is counted.
	waitFor(t, 5*time.Second, func() (bool, string) {
		return connectedTo(b, c.ID()) && !connectedTo(b, x.ID()),
			fmt.Sprintf("b connected to c: %t, to x: %t; want c and not x", connectedTo(b, c.ID()), connectedTo(b, x.ID()))
	})

	// A member that was away gets what it missed from the first member it connects to: C,
	// stopped, holds version 3 when it starts again, and gets version 4 from B (A is gone).
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.PublishRoster(makeRoster(t, 4, 2, exp, admins, admins, []rosterHome{hb, hc})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() (bool, string) { return rosterVersion(b) == 4, "b has not got version 4" })
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	c = reopen(t, hc.home)
	if v := rosterVersion(c); v != 3 {
		t.Fatalf("after a restart c holds version %d, want 3", v)
	}
	if err := connect(c, b); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() (bool, string) { return rosterVersion(c) == 4, "c has not got version 4 from b" })

	// Without community in its config, an agent belongs to no community, whatever it stored.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(hc.home, ConfigFile)
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, []byte(strings.Replace(string(cfg), "community: roster.cbor\n", "", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := reopen(t, hc.home).Community(); !errors.Is(err, ErrNoCommunity) {
		t.Fatalf("config without community: %v, want %v", err, ErrNoCommunity)
	}
}

// TestRosterAnchor: an agent starts only from a roster file signed by k of its own admins, and
// not from one expired.
func TestRosterAnchor(t *testing.T) {
	ha, hb := initRosterHome(t, "a", true), initRosterHome(t, "b", true)
	admins := []rosterHome{ha, hb}
	for _, tc := range []struct {
		name string
		file []byte
		want error
	}{
		{"one signature of two needed", makeRoster(t, 1, 2, time.Now().Add(time.Hour), admins, admins, admins[:1]), protocol.ErrRosterThreshold},
		{"expired", makeRoster(t, 1, 1, time.Now().Add(-time.Hour), admins, admins, admins), protocol.ErrRosterExpired},
	} {
		if err := os.WriteFile(filepath.Join(ha.home, "roster.cbor"), tc.file, 0o600); err != nil {
			t.Fatal(err)
		}
		a, err := New(ha.home, Options{})
		if err == nil {
			a.Close()
		}
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestRosterExpiredAdmitsNobodyNew: once the roster held expires, a connection that was up
// stays, and a new one is refused.
func TestRosterExpiredAdmitsNobodyNew(t *testing.T) {
	ha, hb, hc := initRosterHome(t, "a", true), initRosterHome(t, "b", true), initRosterHome(t, "c", true)
	all := []rosterHome{ha, hb, hc}
	v1 := makeRoster(t, 1, 1, time.Now().Add(time.Hour), all[:1], all, all[:1])
	for _, h := range all {
		if err := os.WriteFile(filepath.Join(h.home, "roster.cbor"), v1, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var clock movableClock
	a := reopenWith(t, ha.home, clock.options())
	b, c := reopen(t, hb.home), reopen(t, hc.home)
	if err := connect(b, a); err != nil {
		t.Fatal(err)
	}
	clock.advance(2 * time.Hour)
	if v, err := a.Community(); err != nil || !v.Expired {
		t.Fatalf("a's roster: %+v, %v; want expired", v, err)
	}
	_ = connect(c, a)
	waitFor(t, 5*time.Second, func() (bool, string) {
		return refusedBy(a, refusedRosterExpired) == 1 && !connectedTo(c, a.ID()), "a has not refused c after the expiry"
	})
	if !connectedTo(a, b.ID()) {
		t.Fatal("a dropped b, connected before the expiry")
	}
}

// TestRosterRemovedAgreements: when a roster removes a member, the agreement in force with it
// is flagged, and cancelled only when the roster asks for it.
func TestRosterRemovedAgreements(t *testing.T) {
	for _, annul := range []bool{false, true} {
		t.Run(fmt.Sprintf("annul-removed=%v", annul), func(t *testing.T) {
			hp, hr := initRosterHome(t, "provider", true), initRosterHome(t, "requester", true)
			both, admin := []rosterHome{hp, hr}, []rosterHome{hp}
			exp := time.Now().Add(time.Hour)
			v1 := makeRoster(t, 1, 1, exp, admin, both, admin)
			for _, h := range both {
				if err := os.WriteFile(filepath.Join(h.home, "roster.cbor"), v1, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			prov, req := reopen(t, hp.home), reopen(t, hr.home)
			addOffer(t, prov, nil)
			rec, err := req.Request(context.Background(), addrInfo(prov), requestTemplate(t))
			if err != nil || rec.State != protocol.StateApproved {
				t.Fatalf("negotiation: %+v, %v", rec, err)
			}
			waitState(t, prov, rec.SSAID, protocol.StateApproved)

			r := &protocol.Roster{Community: "test", Version: 2, Expires: protocol.FromTime(exp), Threshold: 1,
				Admins: []peer.ID{hp.id.PeerID()}, AnnulRemoved: annul,
				Members: []protocol.Member{{Peer: hp.id.PeerID(), Roles: []protocol.MemberRole{protocol.RoleMember}}}}
			s, err := protocol.NewSignedRoster(r)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Sign(hp.id); err != nil {
				t.Fatal(err)
			}
			v2, err := s.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := prov.PublishRoster(v2); err != nil {
				t.Fatal(err)
			}
			if n := testutil.ToFloat64(prov.roster.flagged); n != 1 {
				t.Errorf("%v agreements flagged, want 1", n)
			}
			if !annul {
				// Close waits for whatever the roster started: then the store says what it did.
				if err := prov.Close(); err != nil {
					t.Fatal(err)
				}
				if got, err := reopen(t, hp.home).Negotiation(rec.SSAID); err != nil || got.State != protocol.StateApproved {
					t.Errorf("the agreement is %+v, %v; want approved (flagged only)", got, err)
				}
				return
			}
			waitFor(t, 10*time.Second, func() (bool, string) {
				got, err := prov.Negotiation(rec.SSAID)
				return err == nil && got.State != protocol.StateApproved, fmt.Sprintf("still %+v, %v", got.State, err)
			})
		})
	}
}

// TestRosterHelloGolden holds the hello frame of /ssanet/roster/1.0.0: if it changes, the
// protocol changed.
func TestRosterHelloGolden(t *testing.T) {
	b, err := protocol.Marshal(&rosterHello{Community: "cert-eu", Version: 300})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprintf("%x", b), "a20167636572742d65750219012c"; got != want {
		t.Fatalf("hello encodes as %s, want %s", got, want)
	}
}

// TestRosterConfig: allow and community exclude each other.
func TestRosterConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Community = "roster.cbor"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("community alone: %v", err)
	}
	cfg.Allow = []string{"12D3KooWP4di9gewGsjwMBmjMz1eox58qzYKYhRJWM2saqEZvSen"}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "allow and community exclude each other") {
		t.Fatalf("allow and community: %v", err)
	}
}

// TestRosterReceivedRefused: a roster a peer sends in an exchange is applied only if it
// verifies as the successor of the roster held: one signed by fewer admins than the
// threshold, or one that skips a version, is refused and counted, and the roster held stays.
func TestRosterReceivedRefused(t *testing.T) {
	ha, hb, hc := initRosterHome(t, "a", true), initRosterHome(t, "b", true), initRosterHome(t, "c", true)
	admins := []rosterHome{ha, hb, hc}
	exp := time.Now().Add(time.Hour)
	if err := os.WriteFile(filepath.Join(ha.home, "roster.cbor"), makeRoster(t, 1, 2, exp, admins, admins, admins[:2]), 0o600); err != nil {
		t.Fatal(err)
	}
	a := reopen(t, ha.home)
	for _, tc := range []struct {
		name   string
		roster []byte
		want   error
	}{
		{"one signature of two needed", makeRoster(t, 2, 2, exp, admins, admins, admins[1:2]), protocol.ErrRosterThreshold},
		{"version 3 after version 1", makeRoster(t, 3, 2, exp, admins, admins, admins[1:]), protocol.ErrRosterGap},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refused := testutil.ToFloat64(a.roster.received.WithLabelValues("refused"))
			var frames bytes.Buffer
			if err := writeFrame(&frames, tc.roster); err != nil {
				t.Fatal(err)
			}
			if err := a.roster.receive(bufio.NewReader(&frames), hb.id.PeerID(), 1, 2); !errors.Is(err, tc.want) {
				t.Errorf("receive: %v, want %v", err, tc.want)
			}
			if n := testutil.ToFloat64(a.roster.received.WithLabelValues("refused")); n != refused+1 {
				t.Errorf("rosters refused: %v, want %v", n, refused+1)
			}
			if v := rosterVersion(a); v != 1 {
				t.Errorf("a holds version %d, want 1", v)
			}
		})
	}
}
