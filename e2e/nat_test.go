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
	prefix := fmt.Sprintf("s%d", os.Getpid()%100000)
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

	const port = "4001"
	relay := natAgent(t, "relay", prefix+"-relay", "/ip4/11.17.0.20/udp/"+port+"/quic-v1")
	req := natAgent(t, "requester", prefix+"-req", "/ip4/11.17.0.10/udp/"+port+"/quic-v1")
	prov1 := natAgent(t, "provider1", prefix+"-prov1", "/ip4/10.17.1.10/udp/"+port+"/quic-v1")
	prov2 := natAgent(t, "provider2", prefix+"-prov2", "/ip4/10.17.2.10/udp/"+port+"/quic-v1")
	all := []*natNode{relay, req, prov1, prov2}
	relayAddr := "/ip4/11.17.0.20/udp/" + port + "/quic-v1/p2p/" + relay.id
	for _, n := range all {
		var allow []string
		for _, o := range all {
			if o != n {
				allow = append(allow, fmt.Sprintf("%q", o.id))
			}
		}
		yaml := "allow: [" + strings.Join(allow, ", ") + "]\n"
		switch n {
		case relay:
			yaml += "reachability: public\nrelay:\n  serve: true\n  unlimited: true\n"
		case req:
			yaml += fmt.Sprintf("reachability: public\nbootstrap: [%q]\n", relayAddr)
		default:
			// The directory's servers are the relay and the requester; a provider behind NAT
			// is a client of it.
			yaml += fmt.Sprintf("reachability: private\nrelays: [%q]\nbootstrap: [%q]\n", relayAddr, relayAddr)
			setConfig(t, n.home, "dht-mode", "client")
		}
		withYAML(yaml)(t, n.agent)
		for _, o := range fastExchange {
			o(t, n.agent)
		}
	}
	// A stranger on the public segment, in no allow-list.
	stranger := natAgent(t, "stranger", prefix+"-req", "/ip4/11.17.0.10/udp/4002/quic-v1")
	withYAML("reachability: public\n")(t, stranger.agent)
	for _, n := range append(all, stranger) {
		n.start()
	}

	tmpl := requesterTemplate(t, "", "90d")
	for _, p := range []*natNode{prov1, prov2} {
		p.offer("provider.yaml")
	}
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
		{prov1, "direct"},
		{prov2, "relayed"},
	} {
		t.Run(tc.prov.name, func(t *testing.T) {
			via := relayAddr + "/p2p-circuit/p2p/" + tc.prov.id
			// The requester knows the provider's peer ID only: it finds the provider in the
			// directory, at the relay address the provider advertised, and negotiates there.
			start := time.Now()
			waitFor(t, 60*time.Second, func() (bool, string) {
				ps := discover(t, req.home, query{typ: "attack-detection-log", format: "eve"})
				for _, p := range ps {
					if p.PeerID == tc.prov.id && slices.Contains(p.Addrs, via) {
						return true, ""
					}
				}
				return false, fmt.Sprintf("the directory lists %+v, want %s at %s", ps, tc.prov.id, via)
			})
			t.Logf("%s: found in the directory at its relay address after %s", tc.prov.name, time.Since(start).Round(time.Millisecond))
			r := req.in(t).cli("--json", "request", "--provider", tc.prov.id, "--template", tmpl, "--wait", "20s")
			var v negView
			if r.code != 0 || decode(r.stdout, &v) != nil || v.State != "approved" {
				t.Fatalf("request by peer ID, through the directory, not approved: %s", r)
			}
			id := v.SSAID
			tc.prov.in(t).waitState(id, "approved", 20*time.Second)
			recs := eveStream(sampleEVE(t), streamBase, 0, natRecords, func(int) string { return attacker })
			ing := tc.prov.in(t).ingest(recs)
			want := int(ing.Queued[id])
			if want == 0 {
				t.Fatalf("ingest of %d records queued none for %s: %+v", natRecords, id, ing)
			}
			start = time.Now()
			waitFor(t, 3*time.Minute, func() (bool, string) {
				got := len(req.in(t).records(id))
				return got == want, fmt.Sprintf("the requester holds %d of %d records", got, want)
			})
			t.Logf("%s: %d records delivered in %s", tc.prov.name, want, time.Since(start).Round(time.Millisecond))
			strangerRefused(t, &natNode{agent: stranger.in(t), id: stranger.id}, via, tmpl)
			waitFor(t, 30*time.Second, func() (bool, string) {
				line := peersLine(t, req.in(t), tc.prov.id)
				if !strings.Contains(line, "connected "+tc.path) {
					return false, line
				}
				// One mapping per source: the requester reaches the provider at the external
				// address and port the relay reaches it at, nat1's port-preserving mapping.
				if mapped := "/ip4/11.17.0.31/udp/" + port + "/quic-v1"; tc.path == "direct" {
					if relayed := peersLine(t, relay.in(t), tc.prov.id); !strings.Contains(line, mapped) || !strings.Contains(relayed, mapped) {
						t.Fatalf("the provider is not at %s for both the requester and the relay:\n%s\n%s", mapped, line, relayed)
					}
				}
				t.Logf("ssanet peers: %s", line)
				return true, ""
			})
		})
	}
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

// waitFor polls cond every pollInterval until it holds; after timeout the test fails with
// what cond last said.
func waitFor(t *testing.T, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, last)
		}
		time.Sleep(pollInterval)
	}
}
