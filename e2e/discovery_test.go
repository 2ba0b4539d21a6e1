//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// discover runs `ssanet --json discover` for q on the agent in home; it must exit 0 and print
// a JSON list (never null).
func discover(t *testing.T, home string, q query) []providerView {
	t.Helper()
	r := run(t, "", nil, append([]string{"--home", home}, q.args()...)...)
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	var ps []providerView
	if err := json.Unmarshal([]byte(r.stdout), &ps); err != nil || ps == nil {
		t.Fatalf("want a JSON list (err %v): %s", err, r)
	}
	return ps
}

// names are the testnet names of the providers, sorted.
func (tn *testnet) names(ps []providerView) []string {
	var out []string
	for _, p := range ps {
		out = append(out, tn.nameOf(p.PeerID))
	}
	slices.Sort(out)
	return out
}

// checkOffers fails t unless every provider shows only the offers of want (by provider name)
// that match q, each sharing q's information, and can be dialled at its testnet address.
func (tn *testnet) checkOffers(t *testing.T, q query, ps []providerView, want map[string]offerSpec) {
	t.Helper()
	for _, p := range ps {
		name := tn.nameOf(p.PeerID)
		if !slices.Contains(p.Addrs, tn.node(name).Addr) {
			t.Errorf("%s: %s is listed at %v, not at its address %s", q, name, p.Addrs, tn.node(name).Addr)
		}
		var ids []string
		for _, o := range p.Offers {
			ids = append(ids, o.ID)
			if !slices.ContainsFunc(o.Terms.Information, func(in infoView) bool {
				return in.Type == q.typ && (q.format == "" || in.Format == q.format)
			}) {
				t.Errorf("%s: %s shows offer %s, which shares %+v", q, name, o.ID, o.Terms.Information)
			}
		}
		if w := want[name].id; len(ids) != 1 || ids[0] != w {
			t.Errorf("%s: %s shows offers %v, want [%s]", q, name, ids, w)
		}
	}
}

// waitProviders polls `discover` from the agent in home until it lists exactly the providers
// want (testnet names, sorted). An answer that lists any other provider fails at once: the
// directory may be late, never wrong.
func (tn *testnet) waitProviders(t *testing.T, home string, q query, want []string) []providerView {
	t.Helper()
	deadline := time.Now().Add(advertiseTimeout)
	for {
		ps := discover(t, home, q)
		got := tn.names(ps)
		if slices.Equal(got, want) {
			return ps
		}
		for _, g := range got {
			if !slices.Contains(want, g) {
				t.Fatalf("discover %s from %s lists %v, want %v: %s is not a provider of it", q, home, got, want, g)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("discover %s from %s lists %v after %s, want %v", q, home, got, advertiseTimeout, want)
		}
		time.Sleep(pollInterval)
	}
}

// providersNow runs discover once: it must list exactly want, without waiting for the
// directory (what a provider withdrew or a dead provider is never shown, at once).
func (tn *testnet) providersNow(t *testing.T, home string, q query, want []string) {
	t.Helper()
	if got := tn.names(discover(t, home, q)); !slices.Equal(got, want) {
		t.Errorf("discover %s from %s lists %v, want %v", q, home, got, want)
	}
}

// TestDiscoveryTestnet runs a 10-agent testnet with `ssanet testnet` in which three agents
// offer different (type, format) pairs. Every query, by type or by type and format, from
// agents that offer nothing, lists exactly the right providers and their matching signed
// offers (an unknown pair: an empty list, exit 0); the requester negotiates an SSA with a
// provider at the address discovery gave; an offer that is removed and a provider that is
// killed with SIGKILL stop being listed at once.
func TestDiscoveryTestnet(t *testing.T) {
	t.Parallel()
	tn := startTestnet(t, 10)
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range []string{"node1", "node2", "node3", "node4", "node7"} {
				tn.dumpLog(n)
			}
		}
	})
	offers := map[string]offerSpec{
		"node2": {"eve-alerts", [][2]string{{"attack-detection-log", "eve"}}},
		"node3": {"ids-incidents", [][2]string{{"attack-detection-log", "idmefv2"}, {"incident", "iodef"}}},
		"node4": {"blocklist", [][2]string{{"blacklist", "syslog"}}},
	}
	dir := t.TempDir()
	for _, name := range []string{"node2", "node3", "node4"} {
		if r := run(t, "", nil, "--home", tn.node(name).Home, "offer", "add", offerFile(t, dir, offers[name])); r.code != 0 {
			t.Fatalf("%s: %s", name, r)
		}
	}
	expect := func(q query) []string {
		var out []string
		for name, o := range offers {
			if o.provides(q.typ, q.format) {
				out = append(out, name)
			}
		}
		slices.Sort(out)
		return out
	}
	queries := []query{
		{"attack-detection-log", ""},
		{"attack-detection-log", "eve"},
		{"attack-detection-log", "idmefv2"},
		{"incident", ""},
		{"incident", "iodef"},
		{"blacklist", ""},
		{"blacklist", "syslog"},
		{"blacklist", "eve"},   // a type that is offered, in a format that is not
		{"incident", "syslog"}, // likewise
		{"attack-detection-log", "idmef"},
	}
	req := tn.node("node7")
	start := time.Now()
	for _, q := range queries {
		tn.checkOffers(t, q, tn.waitProviders(t, req.Home, q, expect(q)), offers)
	}
	t.Logf("every query answered in full from node7 %s after the offers were added", time.Since(start).Round(time.Millisecond))

	// Other requesters see the same directory: node1 (everyone's bootstrap peer) and node10.
	for _, name := range []string{"node1", "node10"} {
		for _, q := range queries {
			tn.waitProviders(t, tn.node(name).Home, q, expect(q))
		}
	}

	t.Run("empty result is an empty list", func(t *testing.T) {
		r := run(t, "", nil, append([]string{"--home", req.Home}, query{"blacklist", "eve"}.args()...)...)
		if r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
			t.Errorf("want [] and exit 0: %s", r)
		}
		r = run(t, "", nil, "--home", req.Home, "discover", "--type", "blacklist", "--format", "eve")
		if r.code != 0 || !strings.Contains(r.stdout, "no providers found") {
			t.Errorf("want 'no providers found' and exit 0: %s", r)
		}
	})

	t.Run("request from a discovered provider", func(t *testing.T) {
		ps := discover(t, req.Home, query{"attack-detection-log", "eve"})
		if len(ps) != 1 || len(ps[0].Addrs) == 0 {
			t.Fatalf("want one provider with an address: %+v", ps)
		}
		r := run(t, "", nil, "--home", req.Home, "--json", "request", "--provider", ps[0].Addrs[0],
			"--template", testdata(t, "requester.yaml"), "--wait", "20s")
		var v negView
		if r.code != 0 || decode(r.stdout, &v) != nil || v.State != "approved" {
			checkReasonsDecoded(t, r)
			t.Fatalf("request to %s: want approved, exit 0: %s", ps[0].Addrs[0], r)
		}
		s := v.SSA
		if s == nil || s.Participants.Provider.PeerID != tn.node("node2").PeerID ||
			s.Participants.Requester.PeerID != req.PeerID {
			t.Errorf("SSA %s: participants %+v, want node7 -> node2", v.SSAID, s)
		} else if len(s.Information) != 1 || s.Information[0].Type != "attack-detection-log" || s.Information[0].Format != "eve" {
			t.Errorf("SSA %s: information %+v, want attack-detection-log/eve", v.SSAID, s.Information)
		}
	})

	t.Run("removed offer disappears", func(t *testing.T) {
		node3 := tn.node("node3")
		if r := run(t, "", nil, "--home", node3.Home, "offer", "remove", "ids-incidents"); r.code != 0 {
			t.Fatalf("%s", r)
		}
		tn.providersNow(t, req.Home, query{"attack-detection-log", ""}, []string{"node2"})
		tn.providersNow(t, req.Home, query{"attack-detection-log", "idmefv2"}, []string{})
		tn.providersNow(t, req.Home, query{"incident", ""}, []string{})
		tn.providersNow(t, tn.node("node10").Home, query{"incident", "iodef"}, []string{})
		// The provider is still there, with nothing to offer.
		var p []providerView
		r := run(t, "", nil, "--home", req.Home, "--json", "discover", "--peer", node3.PeerID)
		if r.code != 0 || decode(r.stdout, &p) != nil || len(p) != 1 || p[0].PeerID != node3.PeerID || len(p[0].Offers) != 0 {
			t.Errorf("discover --peer node3: want node3 with no offers: %s", r)
		}
	})

	t.Run("killed provider is not listed", func(t *testing.T) {
		node4 := tn.node("node4")
		killAgent(t, node4.Home)
		tn.providersNow(t, req.Home, query{"blacklist", ""}, []string{})
		tn.providersNow(t, req.Home, query{"blacklist", "syslog"}, []string{})
		tn.providersNow(t, tn.node("node1").Home, query{"blacklist", ""}, []string{})
		// Its offers cannot be fetched: validating it fails.
		start := time.Now()
		r := run(t, "", nil, "--home", req.Home, "--json", "discover", "--peer", node4.PeerID)
		if r.code != 1 || r.stdout != "" {
			t.Errorf("discover --peer of a dead provider: want exit 1 and no output: %s", r)
		}
		t.Logf("discover --peer of the dead provider: exit %d after %s: %s", r.code, time.Since(start).Round(time.Millisecond), strings.TrimSpace(r.stderr))
		// The others are unaffected.
		tn.providersNow(t, req.Home, query{"attack-detection-log", "eve"}, []string{"node2"})
	})
}

// TestDiscoveryAlone: an agent with no peers (no bootstrap peers, mDNS off; or bootstrap
// peers that do not answer) answers `discover` at once, with a warning on stderr, an empty
// list and exit 0, never a hang; bad arguments are usage errors.
func TestDiscoveryAlone(t *testing.T) {
	t.Parallel()
	// A peer ID and a loopback port where nobody listens (the discard port).
	const nobody = "12D3KooWBr3cxCE6k4aoi998c5yAPKCMfe537ZcGhjvCX5DVSa3d"
	deadBoot := func(t *testing.T, a *agent) {
		t.Helper()
		// config.yaml of an agent initialised without --bootstrap has no bootstrap key.
		path := filepath.Join(a.home, "config.yaml")
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := fmt.Fprintf(f, "bootstrap: [/ip4/127.0.0.1/tcp/%d/p2p/%s]\n", freePort(t), nobody); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name string
		opts []option
	}{
		{"no bootstrap peers", nil},
		{"bootstrap peer does not answer", []option{deadBoot}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			a := newAgent(t, "lone", "", c.opts...)
			for _, args := range [][]string{
				{"--json", "discover", "--type", "incident"},
				{"--json", "discover", "--type", "attack-detection-log", "--format", "eve", "--timeout", "30s"},
				{"discover", "--type", "blacklist"},
			} {
				start := time.Now()
				r := a.cli(args...)
				took := time.Since(start)
				if took > 5*time.Second {
					t.Errorf("%v took %s, want an answer at once", args, took)
				}
				if r.code != 0 || !strings.Contains(r.stderr, "warning") || !strings.Contains(r.stderr, "no peers") {
					t.Errorf("want exit 0 and a warning that there are no peers: %s", r)
				}
				want := "[]"
				if args[0] != "--json" {
					want = "no providers found"
				}
				if strings.TrimSpace(r.stdout) != want {
					t.Errorf("want %q on stdout: %s", want, r)
				}
			}
			// Validating a peer cannot work either: an error, at once.
			start := time.Now()
			r := a.cli("discover", "--peer", nobody)
			if r.code != 1 || time.Since(start) > 5*time.Second {
				t.Errorf("discover --peer with no peers: want exit 1 at once, got it after %s: %s", time.Since(start), r)
			}
			t.Logf("discover --peer alone: %s", strings.TrimSpace(r.stderr))
		})
	}

	t.Run("bad arguments", func(t *testing.T) {
		t.Parallel()
		a := newAgent(t, "args", "")
		for _, args := range [][]string{
			{"discover"},
			{"discover", "--type", "incident", "--peer", nobody},
			{"discover", "--type", "incident", "extra"},
			{"discover", "--type", "incident", "--timeout", "0s"},
			{"discover", "--type", "incident", "--timeout", "-1s"},
		} {
			if r := a.cli(args...); r.code != 2 || r.stdout != "" {
				t.Errorf("want a usage error (exit 2), no output: %s", r)
			}
		}
		if r := a.cli("discover", "--peer", "not-a-peer-id"); r.code == 0 || r.stdout != "" {
			t.Errorf("want an error for a malformed peer ID: %s", r)
		}
	})
}
