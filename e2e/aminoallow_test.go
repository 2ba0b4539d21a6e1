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
	for deadline := time.Now().Add(10 * time.Second); !prov.peer(strangerID).Connected; time.Sleep(pollInterval) {
		if time.Now().After(deadline) {
			t.Fatal("the stranger did not connect to the provider through the public directory")
		}
	}

	v, r := stranger.request(prov, testdata(t, "requester.yaml"), 20*time.Second)
	if r.code != 3 {
		t.Fatalf("request: exit %d, want 3: %s", r.code, r)
	}
	if v.State != "failed" || len(v.Reasons) != 1 || v.Reasons[0].Code != "not-authorized" {
		t.Errorf("request ended %s with %+v, want failed with not-authorized", v.State, v.Reasons)
	}
	if !strings.Contains(r.stderr, "allow-list") {
		t.Errorf("stderr does not say why: %s", r)
	}
	if p := prov.peer(strangerID); !p.Connected {
		t.Errorf("the provider closed the stranger's connection, which the public directory needs: %+v", p)
	}
	var line string
	for deadline := time.Now().Add(10 * time.Second); line == "" && time.Now().Before(deadline); time.Sleep(pollInterval) {
		data, err := os.ReadFile(prov.log)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(data), "\n") {
			if strings.Contains(l, `"msg":"stream refused`) && strings.Contains(l, `"peer":"`+strangerID+`"`) {
				line = l
			}
		}
	}
	if line == "" || !strings.Contains(line, `"proto":"/ssanet/negotiate/1.0.0"`) || !strings.Contains(line, "allow-list") {
		t.Errorf("the provider's log has no refused negotiation stream of %s: %q", strangerID, line)
	}
	agree(t, member, prov, testdata(t, "requester.yaml"))
}
