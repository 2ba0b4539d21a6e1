package e2e

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestAminoAllowList: with directory: amino, a provider's allow-list still decides who may
// negotiate, per protocol: a requester outside it, connected to the provider through the
// public directory, stays connected, and its request ends with exit 3, not-authorized; the
// provider logs the refused stream. The peer the allow-list holds agrees.
func TestAminoAllowList(t *testing.T) {
	amino := func(extra string) option {
		return func(t *testing.T, a *agent) {
			t.Helper()
			appendConfig(t, a.home, "directory: amino\ndirectory-community: cert-example\n"+extra)
		}
	}
	member := newAgent(t, "member", "", amino(""))
	prov := newAgent(t, "provider", "", amino("allow: ["+member.peerID()+"]\n"))
	prov.offer("provider.yaml")
	stranger := newAgent(t, "stranger", "", amino("bootstrap: ["+prov.addr()+"]\n"))
	strangerID := stranger.peerID()
	waitFor(t, 10*time.Second, func() (bool, string) {
		return prov.peer(strangerID).Connected, "the stranger did not connect to the provider through the public directory"
	})

	requestNotAuthorized(t, stranger, prov)
	if p := prov.peer(strangerID); !p.Connected {
		t.Errorf("the provider closed the stranger's connection, which the public directory needs: %+v", p)
	}
	line := prov.refusalLine(`"msg":"stream refused`, strangerID)
	if !strings.Contains(line, `"proto":"/ssanet/negotiate/1.0.0"`) || !strings.Contains(line, "allow-list") {
		t.Errorf("the provider's refusal is not of the negotiation stream, for its allow-list: %s", line)
	}
	agree(t, member, prov, testdata(t, "requester.yaml"))
}

// requestNotAuthorized runs a request from req to prov that prov's allow-list refuses: exit 3,
// failed with the one reason not-authorized, stderr saying why.
func requestNotAuthorized(t *testing.T, req, prov *agent) {
	t.Helper()
	start := time.Now()
	v, r := req.request(prov, testdata(t, "requester.yaml"), 20*time.Second)
	t.Logf("ssanet request to an agent whose allow-list excludes the requester ended in %v", time.Since(start))
	if r.code != 3 {
		t.Fatalf("request: exit %d, want 3: %s", r.code, r)
	}
	if v.State != "failed" || len(v.Reasons) != 1 || v.Reasons[0].Code != "not-authorized" {
		t.Errorf("request ended %s with %+v, want failed with not-authorized", v.State, v.Reasons)
	}
	if !strings.Contains(r.stderr, "allow-list") {
		t.Errorf("stderr does not say why: %s", r)
	}
}

// refusalLine waits for the last line of a's log with msg (a JSON fragment) about peer id, and
// fails the test if none comes.
func (a *agent) refusalLine(msg, id string) string {
	a.t.Helper()
	var line string
	for deadline := time.Now().Add(10 * time.Second); line == "" && time.Now().Before(deadline); time.Sleep(pollInterval) {
		data, err := os.ReadFile(a.log)
		if err != nil {
			a.t.Fatal(err)
		}
		for _, l := range strings.Split(string(data), "\n") {
			if strings.Contains(l, msg) && strings.Contains(l, `"peer":"`+id+`"`) {
				line = l
			}
		}
	}
	if line == "" {
		a.t.Fatalf("%s's log has no %s of %s", a.name, msg, id)
	}
	return line
}
