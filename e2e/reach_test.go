package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
)

// peerView is one peer of `ssanet peers --json`.
type peerView struct {
	Peer          string   `json:"peer"`
	Addrs         []string `json:"addrs"`
	Connected     bool     `json:"connected"`
	LastError     string   `json:"last_error"`
	LastErrorKind string   `json:"last_error_kind"`
	LastErrorAt   string   `json:"last_error_at"`
}

// peer is what `ssanet peers --json` says of the peer id; the test fails if it is not listed.
func (a *agent) peer(id string) peerView {
	a.t.Helper()
	var ps []peerView
	a.query(&ps, "peers")
	for _, p := range ps {
		if p.Peer == id {
			return p
		}
	}
	a.t.Fatalf("%s: ssanet peers does not list %s: %+v", a.name, id, ps)
	return peerView{}
}

// TestRequestToNonSSAnetPeer: a request to a libp2p peer that does not speak ssanet (a plain
// go-libp2p host, as a kubo node would be) ends within the message timeout, failed with the
// reason not-ssanet-peer, exit 7; `ssanet peers` says why.
func TestRequestToNonSSAnetPeer(t *testing.T) {
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	const timeout = 5 * time.Second
	req := newAgent(t, "requester", "", withConfig("message-timeout", timeout.String()))
	addr := fmt.Sprintf("%s/p2p/%s", h.Addrs()[0], h.ID())
	start := time.Now()
	r := req.cli("--json", "request", "--provider", addr, "--template", testdata(t, "requester.yaml"), "--wait", "20s")
	took := time.Since(start)
	if r.code != 7 {
		t.Fatalf("request: exit %d, want 7: %s", r.code, r)
	}
	if took > timeout {
		t.Errorf("request took %v, over the message timeout %v", took, timeout)
	}
	t.Logf("ssanet request to a peer that does not speak ssanet ended in %v", took)
	var v negView
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("%v\n%s", err, r)
	}
	if v.State != "failed" || len(v.Reasons) != 1 || v.Reasons[0].Code != "not-ssanet-peer" {
		t.Errorf("request ended %s with %+v, want failed with not-ssanet-peer", v.State, v.Reasons)
	}
	if !strings.Contains(r.stderr, "speaks libp2p but not ssanet") {
		t.Errorf("stderr does not say why: %s", r)
	}
	if got := req.show(v.SSAID); got.State != "failed" {
		t.Errorf("ssa show: %s, want failed", got.State)
	}
	if p := req.peer(h.ID().String()); p.LastErrorKind != "not-ssanet" || !strings.Contains(p.LastError, "protocols not supported") {
		t.Errorf("ssanet peers: %+v, want last error of kind not-ssanet", p)
	}
}

// TestRequestOutsideAllowList: a request to an agent whose allow-list does not include the
// requester says so on both sides: the requester exits 3 with reason not-authorized, the
// provider logs the refused peer with its address.
func TestRequestOutsideAllowList(t *testing.T) {
	req := newAgent(t, "requester", "")
	other := newAgent(t, "other", "")
	prov := newAgent(t, "provider", "", func(t *testing.T, a *agent) {
		t.Helper()
		appendConfig(t, a.home, "allow: ["+other.peerID()+"]\n")
	})
	prov.offer("provider.yaml")
	requestNotAuthorized(t, req, prov)
	if p := req.peer(prov.peerID()); p.LastErrorKind != "refused" {
		t.Errorf("ssanet peers: %+v, want last error of kind refused", p)
	}
	if out := req.must("peers"); !strings.Contains(out, prov.peerID()+" not connected") || !strings.Contains(out, " refused: ") {
		t.Errorf("ssanet peers does not show the provider's refusal:\n%s", out)
	}
	line := prov.refusalLine(`"msg":"connection refused"`, req.peerID())
	for _, want := range []string{`"addr":"/ip4/127.0.0.1/`, `"reason":"allow-list"`} {
		if !strings.Contains(line, want) {
			t.Errorf("refusal line lacks %s: %s", want, line)
		}
	}
	// The peer the allow-list holds is not refused.
	agree(t, other, prov, testdata(t, "requester.yaml"))
}

// appendConfig adds text at the end of the home's config.yaml.
func appendConfig(t *testing.T, home, text string) {
	t.Helper()
	path := filepath.Join(home, "config.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(data, text...), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestSecondAgentOnPortInUse: `ssanet run` on a port another agent listens on exits 1 naming
// the address, instead of sharing the port.
func TestSecondAgentOnPortInUse(t *testing.T) {
	listen := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", freePort(t))
	newAgent(t, "first", listen)
	home := filepath.Join(t.TempDir(), "second")
	if r := run(t, "", nil, "--home", home, "init", "--listen", listen, "--mdns=false"); r.code != 0 {
		t.Fatal(r)
	}
	r := run(t, "", nil, "--home", home, "run")
	if r.code != 1 || !strings.Contains(r.stderr, "cannot listen on "+listen) {
		t.Fatalf("second run: exit %d, want 1 naming %s: %s", r.code, listen, r)
	}
}
