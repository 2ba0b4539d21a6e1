package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/ssanet/ssanet/agent"
	"github.com/ssanet/ssanet/protocol"
)

// TestOutcomeExitCodes: how request, approve and decline exit for each negotiation that has
// come to rest; an expired proposal agreed nothing and must not exit 0.
func TestOutcomeExitCodes(t *testing.T) {
	for _, tc := range []struct {
		state   string
		reasons []protocol.Reason
		local   bool
		code    int
		errs    string
	}{
		{state: "approved", code: exitOK},
		{state: "rejected", code: exitRefused},
		{state: "rejected", local: true, code: exitOK},
		{state: "expired", code: exitExpired, errs: "expired before it was accepted"},
		{state: "expired", local: true, code: exitExpired, errs: "nothing was agreed"},
		{state: "proposal-received", code: exitOK},
		{state: "failed", reasons: []protocol.Reason{{Code: protocol.CodeNotSSAnetPeer}}, code: exitNotSSAnet, errs: "speaks libp2p but not ssanet"},
		{state: "failed", reasons: []protocol.Reason{{Code: protocol.CodeNotAuthorized}}, code: exitRefused, errs: "allow-list"},
	} {
		t.Run(tc.state, func(t *testing.T) {
			var out, errs bytes.Buffer
			c := &cli{home: t.TempDir(), stdout: &out, stderr: &errs}
			v := &agent.NegotiationView{SSAID: "ssa-1", State: tc.state, AtRest: true, Reasons: tc.reasons}
			if code := c.awaitOutcome(v, 0, tc.local); code != tc.code {
				t.Fatalf("exit %d, want %d (stderr %q)", code, tc.code, errs.String())
			}
			if !strings.Contains(errs.String(), tc.errs) {
				t.Fatalf("stderr %q, want %q", errs.String(), tc.errs)
			}
		})
	}
}
