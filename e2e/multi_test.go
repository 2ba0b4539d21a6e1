package e2e

import (
	"testing"
	"time"
)

// TestThreeAgents runs three daemons at once: alpha requests from beta and from gamma (a
// requester with two providers), and gamma requests from beta too (beta serves two
// requesters; gamma is provider and requester at once). The three requests run concurrently.
// Every SSA ends approved on both of its sides, with the right participants, identical
// exports and transcripts, and verifies offline.
func TestThreeAgents(t *testing.T) {
	t.Parallel()
	alpha := newAgent(t, "alpha", "")
	beta := newAgent(t, "beta", "")
	gamma := newAgent(t, "gamma", "")
	beta.offer("provider.yaml")
	gamma.offer("provider-incidents.yaml")

	type pair struct {
		req, prov  *agent
		template   string
		infoType   string
		infoFormat string
	}
	pairs := []pair{
		{alpha, beta, "requester.yaml", "attack-detection-log", "eve"},
		{alpha, gamma, "requester-incidents.yaml", "incident", "iodef"},
		{gamma, beta, "requester-incidents.yaml", "incident", "iodef"},
	}
	var started []<-chan result
	for _, p := range pairs {
		started = append(started, p.req.spawn("--json", "request", "--provider", p.prov.addr(),
			"--template", testdata(t, p.template), "--wait", "20s"))
	}
	ids := make([]string, len(pairs))
	for i, ch := range started {
		r := <-ch
		var v negView
		if r.code != 0 || decode(r.stdout, &v) != nil || v.State != "approved" {
			checkReasonsDecoded(t, r)
			t.Fatalf("%s -> %s: want approved: %s", pairs[i].req.name, pairs[i].prov.name, r)
		}
		ids[i] = v.SSAID
	}

	for i, p := range pairs {
		id := ids[i]
		pv := p.prov.waitState(id, "approved", 15*time.Second)
		rv := p.req.show(id)
		reqID, provID := p.req.peerID(), p.prov.peerID()
		if rv.Role != "requester" || rv.Peer != provID || pv.Role != "provider" || pv.Peer != reqID {
			t.Errorf("%s: %s sees %s of %s, %s sees %s of %s", id, p.req.name, rv.Role, rv.Peer, p.prov.name, pv.Role, pv.Peer)
		}
		s := pv.SSA
		if s == nil || s.Participants.Requester.PeerID != reqID || s.Participants.Provider.PeerID != provID {
			t.Errorf("%s: participants %+v, want requester %s (%s) and provider %s (%s)", id, s, p.req.name, reqID, p.prov.name, provID)
			continue
		}
		if len(s.Information) != 1 || s.Information[0].Type != p.infoType || s.Information[0].Format != p.infoFormat {
			t.Errorf("%s: information %+v, want %s/%s", id, s.Information, p.infoType, p.infoFormat)
		}
		sameTranscript(t, p.req, p.prov, id, "request", "proposal", "acceptance", "confirmation")
		verdict, text := verifyOffline(t, sameAgreement(t, p.req, p.prov, id))
		if !verdict.Valid {
			t.Errorf("%s: offline verification: %+v\n%s", id, verdict, text)
		}
	}

	// Each agent lists exactly its own negotiations, in the roles it plays in them.
	want := map[*agent]map[string]string{
		alpha: {ids[0]: "requester", ids[1]: "requester"},
		beta:  {ids[0]: "provider", ids[2]: "provider"},
		gamma: {ids[1]: "provider", ids[2]: "requester"},
	}
	for a, roles := range want {
		got := map[string]string{}
		for _, v := range a.list() {
			got[v.SSAID] = v.Role
		}
		if len(got) != len(roles) {
			t.Errorf("%s lists %v, want %v", a.name, got, roles)
		}
		for id, role := range roles {
			if got[id] != role {
				t.Errorf("%s lists %s as %q, want %s", a.name, id, got[id], role)
			}
		}
	}
}
