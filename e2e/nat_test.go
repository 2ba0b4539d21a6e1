//go:build linux

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// natRecords is how many EVE records each NATed provider delivers.
const natRecords = 10_000

// natPort is the UDP port every agent of the testbed listens on (QUIC).
const natPort = "4001"

// TestNATTestbed builds the NAT testbed (e2e/nattestbed/nattestbed.sh: a public segment with a
// requester and a relay, a provider behind a NAT that keeps one mapping per source and one
// behind a NAT that maps per destination), runs an agent in each namespace, and has the
// requester find each provider in the directory (at the relay address it advertised),
// negotiate with it by peer ID and receive natRecords records from each. The providers are
// private (reachability: private) and reserve a slot at the relay; the relay serves the
// allow-list only, and a stranger cannot negotiate through it. The provider behind the first
// NAT must end on a direct connection (hole punching), the other one relayed. It needs root
// (CI runs as root), ip, nft and ping: it is skipped, saying why, where network namespaces
// cannot be made.
func TestNATTestbed(t *testing.T) {
	tb := startNATTestbed(t, "a", "relay:\n  serve: true\n  unlimited: true\n")
	for _, tc := range []struct {
		prov *natNode
		// path is the path the requester must end on with the provider. The requester's
		// firewall admits new connections from the relay only, so a direct connection can
		// only come from hole punching. Behind nat1 (one mapping per source) DCUtR upgrades
		// the relayed connection, and the direct connection reaches the provider at the same
		// external port as the relay saw it; behind nat2 (a new port per destination) it
		// cannot: the connection stays relayed.
		path string
	}{
		{tb.prov1, "direct"},
		{tb.prov2, "relayed"},
	} {
		t.Run(tc.prov.name, func(t *testing.T) {
			id, want := tb.negotiate(t, tc.prov)
			start := time.Now()
			waitFor(t, 3*time.Minute, func() (bool, string) {
				got := len(tb.req.in(t).records(id))
				return got == want, fmt.Sprintf("the requester holds %d of %d records", got, want)
			})
			t.Logf("%s: %d records delivered in %s", tc.prov.name, want, time.Since(start).Round(time.Millisecond))
			strangerRefused(t, &natNode{agent: tb.stranger.in(t), id: tb.stranger.id}, tb.via(tc.prov), tb.tmpl)
			waitFor(t, 30*time.Second, func() (bool, string) {
				line := peersLine(t, tb.req.in(t), tc.prov.id)
				if !strings.Contains(line, "connected "+tc.path) {
					return false, line
				}
				// One mapping per source: the requester reaches the provider at the external
				// address and port the relay reaches it at, nat1's port-preserving mapping.
				if mapped := "/ip4/11.17.0.31/udp/" + natPort + "/quic-v1"; tc.path == "direct" {
					if relayed := peersLine(t, tb.relay.in(t), tc.prov.id); !strings.Contains(line, mapped) || !strings.Contains(relayed, mapped) {
						t.Fatalf("the provider is not at %s for both the requester and the relay:\n%s\n%s", mapped, line, relayed)
					}
				}
				t.Logf("ssanet peers: %s", line)
				return true, ""
			})
		})
	}
}

// TestNATRelayLimits: on the NAT testbed with a relay at its default limits (relay.data, 1 MiB
// each way per relayed connection), the provider behind the NAT that maps per destination
// (never upgraded to direct) delivers natRecords records, several MiB: the relay resets the
// relayed connection at each limit, the provider cannot dial its requester, and the
// requester dials it again through the relay (here with `ssanet monitor`, as an operator
// would) until every record is in. Skipped as TestNATTestbed is.
func TestNATRelayLimits(t *testing.T) {
	tb := startNATTestbed(t, "b", "relay:\n  serve: true\n")
	id, want := tb.negotiate(t, tb.prov2)
	start := time.Now()
	redials := 0
	waitFor(t, 3*time.Minute, func() (bool, string) {
		got := len(tb.req.in(t).records(id))
		if got < want && !strings.Contains(peersLine(t, tb.req.in(t), tb.prov2.id), "connected relayed") {
			// The relay reset the connection: dial the provider again, through the relay.
			if r := tb.req.in(t).cli("monitor", id); r.code != 0 && r.code != 5 && r.code != 6 {
				t.Logf("monitor after a reset: %s", r)
			}
			redials++
		}
		return got == want, fmt.Sprintf("the requester holds %d of %d records after %d dials again", got, want, redials)
	})
	if redials == 0 {
		t.Fatalf("the relay never reset the relayed connection: %d records went through one connection under the default limit", want)
	}
	t.Logf("provider2: %d records delivered through a relay at its default limits in %s, dialled again %d times", want, time.Since(start).Round(time.Millisecond), redials)
}

// natTestbed is the testbed's agents, started, each provider offering provider.yaml.
type natTestbed struct {
	relay, req, prov1, prov2, stranger *natNode
	relayAddr                          string
	tmpl                               string // the requester's template
}

// startNATTestbed builds the testbed (namespaces named after the process and tag) and
// starts its agents: the relay with relayYAML, the requester, the two providers (private,
// reserving at the relay, clients of the directory whose servers are the relay and the
// requester) and a stranger on the public segment, in no allow-list. It skips t where
// namespaces cannot be made.
func startNATTestbed(t *testing.T, tag, relayYAML string) *natTestbed {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("nattestbed", "nattestbed.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		t.Skip("the NAT testbed needs root to create network namespaces (CI runs as root)")
	}
	for _, tool := range []string{"ip", "nft", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the NAT testbed needs %s (apt-get install iproute2 nftables iputils-ping): %v", tool, err)
		}
	}
	prefix := fmt.Sprintf("s%d%s", os.Getpid()%100000, tag)
	if out, err := exec.Command("ip", "netns", "add", prefix+"-probe").CombinedOutput(); err != nil {
		t.Skipf("network namespaces cannot be made here (%v: %s)", err, out)
	}
	_ = exec.Command("ip", "netns", "del", prefix+"-probe").Run()
	t.Cleanup(func() {
		if out, err := exec.Command("sh", script, "down", prefix).CombinedOutput(); err != nil {
			t.Errorf("tear down the testbed: %v: %s", err, out)
		}
	})
	if out, err := exec.Command("sh", script, "up", prefix).CombinedOutput(); err != nil {
		t.Fatalf("build the testbed: %v: %s", err, out)
	}

	tb := &natTestbed{
		relay: natAgent(t, "relay", prefix+"-relay", "/ip4/11.17.0.20/udp/"+natPort+"/quic-v1"),
		req:   natAgent(t, "requester", prefix+"-req", "/ip4/11.17.0.10/udp/"+natPort+"/quic-v1"),
		prov1: natAgent(t, "provider1", prefix+"-prov1", "/ip4/10.17.1.10/udp/"+natPort+"/quic-v1"),
		prov2: natAgent(t, "provider2", prefix+"-prov2", "/ip4/10.17.2.10/udp/"+natPort+"/quic-v1"),
	}
	all := []*natNode{tb.relay, tb.req, tb.prov1, tb.prov2}
	tb.relayAddr = "/ip4/11.17.0.20/udp/" + natPort + "/quic-v1/p2p/" + tb.relay.id
	for _, n := range all {
		var allow []string
		for _, o := range all {
			if o != n {
				allow = append(allow, fmt.Sprintf("%q", o.id))
			}
		}
		yaml := "allow: [" + strings.Join(allow, ", ") + "]\n"
		switch n {
		case tb.relay:
			yaml += "reachability: public\n" + relayYAML
		case tb.req:
			yaml += fmt.Sprintf("reachability: public\nbootstrap: [%q]\n", tb.relayAddr)
		default:
			// The directory's servers are the relay and the requester; a provider behind NAT
			// is a client of it.
			yaml += fmt.Sprintf("reachability: private\nrelays: [%q]\nbootstrap: [%q]\n", tb.relayAddr, tb.relayAddr)
			setConfig(t, n.home, "dht-mode", "client")
		}
		withYAML(yaml)(t, n.agent)
		for _, o := range fastExchange {
			o(t, n.agent)
		}
	}
	tb.stranger = natAgent(t, "stranger", prefix+"-req", "/ip4/11.17.0.10/udp/4002/quic-v1")
	withYAML("reachability: public\n")(t, tb.stranger.agent)
	for _, n := range append(all, tb.stranger) {
		n.start()
	}
	tb.tmpl = requesterTemplate(t, "", "90d")
	for _, p := range []*natNode{tb.prov1, tb.prov2} {
		p.offer("provider.yaml")
	}
	return tb
}

// via is the relay address of prov, the one it advertises.
func (tb *natTestbed) via(prov *natNode) string {
	return tb.relayAddr + "/p2p-circuit/p2p/" + prov.id
}

// negotiate has the requester, knowing only prov's peer ID, find it in the directory at its
// relay address and negotiate an SSA with it there; prov then ingests natRecords records.
// It returns the SSA's ID and how many records prov queued for it.
func (tb *natTestbed) negotiate(t *testing.T, prov *natNode) (string, int) {
	t.Helper()
	start := time.Now()
	waitFor(t, 60*time.Second, func() (bool, string) {
		ps := discover(t, tb.req.home, query{typ: "attack-detection-log", format: "eve"})
		for _, p := range ps {
			if p.PeerID == prov.id && slices.Contains(p.Addrs, tb.via(prov)) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("the directory lists %+v, want %s at %s", ps, prov.id, tb.via(prov))
	})
	t.Logf("%s: found in the directory at its relay address after %s", prov.name, time.Since(start).Round(time.Millisecond))
	r := tb.req.in(t).cli("--json", "request", "--provider", prov.id, "--template", tb.tmpl, "--wait", "20s")
	var v negView
	if r.code != 0 || decode(r.stdout, &v) != nil || v.State != "approved" {
		t.Fatalf("request by peer ID, through the directory, not approved: %s", r)
	}
	prov.in(t).waitState(v.SSAID, "approved", 20*time.Second)
	recs := eveStream(sampleEVE(t), streamBase, 0, natRecords, func(int) string { return attacker })
	ing := prov.in(t).ingest(recs)
	want := int(ing.Queued[v.SSAID])
	if want == 0 {
		t.Fatalf("ingest of %d records queued none for %s: %+v", natRecords, v.SSAID, ing)
	}
	return v.SSAID, want
}

// peersLine is the line of `ssanet peers` about peer id, or all of its output if none is.
func peersLine(t *testing.T, a *agent, id string) string {
	t.Helper()
	out := a.must("peers")
	for line := range strings.Lines(out) {
		if strings.HasPrefix(line, id) {
			return strings.TrimSpace(line)
		}
	}
	return out
}

// strangerRefused: a peer outside the allow-list cannot use the relay to reach a provider.
func strangerRefused(t *testing.T, stranger *natNode, via, tmpl string) {
	t.Helper()
	r := stranger.cli("--json", "request", "--provider", via, "--template", tmpl, "--wait", "5s")
	var v negView
	if r.code == 0 || (decode(r.stdout, &v) == nil && v.State == "approved") {
		t.Fatalf("a peer outside the allow-list negotiated through the relay: %s", r)
	}
}

// natNode is an agent of the testbed, initialised but not started, and its peer ID.
type natNode struct {
	*agent
	id string
}

var peerIDLine = regexp.MustCompile(`peer ID: (\S+)`)

// natAgent initialises a home whose daemon will run in namespace netns, listening on listen.
func natAgent(t *testing.T, name, netns, listen string) *natNode {
	t.Helper()
	dir := t.TempDir()
	a := &agent{t: t, node: &node{name: name, home: filepath.Join(dir, name), log: filepath.Join(dir, name+".log"), netns: netns}}
	out := a.must("init", "--name", name, "--affiliation", name+" org", "--listen", listen)
	m := peerIDLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("init %s printed no peer ID: %s", name, out)
	}
	setConfig(t, a.home, "mdns", "false")
	t.Cleanup(func() {
		a.stop()
		if t.Failed() {
			a.dumpLog()
		}
	})
	return &natNode{agent: a, id: m[1]}
}
