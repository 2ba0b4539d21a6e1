package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// natRecords is how many EVE records each NATed provider delivers.
const natRecords = 10_000

// TestNATTestbed builds the NAT testbed (e2e/nattestbed/nattestbed.sh: a public segment with a
// requester and a relay, a provider behind a NAT that keeps one mapping per source and one
// behind a NAT that maps per destination), runs an agent in each namespace, and has the
// requester negotiate with each provider through the relay address and receive natRecords
// records from each. The providers are private (reachability: private) and reserve a slot at
// the relay; the relay serves the allow-list only, and a stranger cannot reserve there. It
// needs root (CI runs as root), ip, nft and ping: it is skipped, saying why, where network
// namespaces cannot be made.
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
			yaml += "reachability: public\n"
		default:
			yaml += fmt.Sprintf("reachability: private\nrelays: [%q]\n", relayAddr)
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
		// path is the path the requester must end on with the provider; "" only logs it.
		// The requester's firewall admits new connections from the relay only, so a direct
		// connection can only come from hole punching. Behind nat1 DCUtR may upgrade the
		// relayed connection, but it is tried once, when the relayed connection opens, and
		// only if the provider knows its external address by then: what it did is logged.
		// Behind nat2 (a new port per destination) it cannot: the connection stays relayed.
		path string
	}{
		{prov1, ""},
		{prov2, "relayed"},
	} {
		t.Run(tc.prov.name, func(t *testing.T) {
			via := relayAddr + "/p2p-circuit/p2p/" + tc.prov.id
			var r result
			deadline := time.Now().Add(60 * time.Second)
			for { // until the provider holds its slot at the relay
				r = req.in(t).cli("--json", "request", "--provider", via, "--template", tmpl, "--wait", "20s")
				var v negView
				if r.code == 0 && decode(r.stdout, &v) == nil && v.State == "approved" {
					tc.prov.in(t).waitState(v.SSAID, "approved", 20*time.Second)
					r.stdout = v.SSAID
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("request through the relay not approved after 60s: %s", r)
				}
				time.Sleep(time.Second)
			}
			id := r.stdout
			recs := eveStream(sampleEVE(t), streamBase, 0, natRecords, func(int) string { return attacker })
			ing := tc.prov.in(t).ingest(recs)
			want := int(ing.Queued[id])
			if want == 0 {
				t.Fatalf("ingest of %d records queued none for %s: %+v", natRecords, id, ing)
			}
			start := time.Now()
			waitFor(t, 3*time.Minute, func() (bool, string) {
				got := len(req.in(t).records(id))
				return got == want, fmt.Sprintf("the requester holds %d of %d records", got, want)
			})
			t.Logf("%s: %d records delivered in %s", tc.prov.name, want, time.Since(start).Round(time.Millisecond))
			strangerRefused(t, &natNode{agent: stranger.in(t), id: stranger.id}, via, tmpl)
			waitFor(t, 30*time.Second, func() (bool, string) {
				out := req.in(t).must("peers")
				for line := range strings.Lines(out) {
					if strings.HasPrefix(line, tc.prov.id) {
						if strings.Contains(line, "connected "+tc.path) {
							t.Logf("ssanet peers: %s", strings.TrimSpace(line))
							return true, ""
						}
						return false, line
					}
				}
				return false, out
			})
		})
	}
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
