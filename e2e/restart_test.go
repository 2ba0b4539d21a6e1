package e2e

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestRestartThenCancel: both daemons stop cleanly and start again on the same homes and
// ports; the agreed SSAs survive byte for byte, and afterwards each side can still cancel one
// of them: the requester the first, the provider the second.
func TestRestartThenCancel(t *testing.T) {
	t.Parallel()
	prov := newAgent(t, "provider", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", freePort(t)), withConfig("retry-interval", "1s"))
	req := newAgent(t, "requester", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", freePort(t)), withConfig("retry-interval", "1s"))
	prov.offer("provider.yaml")
	ids := []string{agree(t, req, prov, testdata(t, "requester.yaml")), agree(t, req, prov, testdata(t, "requester.yaml"))}
	before := map[string][]byte{}
	for _, id := range ids {
		before[id] = sameAgreement(t, req, prov, id)
	}

	req.stop()
	prov.stop()
	prov.start()
	req.start()
	for _, id := range ids {
		for _, a := range []*agent{req, prov} {
			if v := a.show(id); v.State != "approved" {
				t.Errorf("%s after the restart: SSA %s is %s", a.name, id, v.State)
			}
		}
		if after := sameAgreement(t, req, prov, id); !bytes.Equal(after, before[id]) {
			t.Errorf("SSA %s exports differently after the restart", id)
		}
	}

	for i, tc := range []struct {
		by, other *agent
	}{
		{req, prov},
		{prov, req},
	} {
		t.Run("by "+tc.by.name, func(t *testing.T) {
			t.Parallel()
			by, other, id := tc.by.in(t), tc.other.in(t), ids[i]
			r := by.cli("--json", "ssa", "cancel", id, "--wait", "5s")
			if r.code != 0 && r.code != 1 {
				t.Fatalf("cancel after the restart: %s", r)
			}
			// Exit 1 means "not confirmed yet, it will be sent again": give the retries time.
			deadline := time.Now().Add(settle)
			for other.show(id).State != "annulled" {
				if time.Now().After(deadline) {
					t.Fatalf("after a restart the %s never delivers its cancellation: the %s is still approved %s later; "+
						"ssa cancel: exit %d, %s",
						by.name, other.name, settle, r.code, strings.TrimSpace(r.stderr))
				}
				time.Sleep(pollInterval)
			}
			by.waitState(id, "annulled", settle)
			verdict, text := verifyOffline(t, sameAgreement(t, by, other, id))
			if !verdict.Valid || verdict.SSA.Status != "annulment" {
				t.Errorf("offline verification of the annulment: %+v\n%s", verdict, text)
			}
		})
	}
}
