package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// Tests of what ends a negotiation that is not final, driven through the CLI: withdrawing an
// unanswered request, cancelling and declining while a revision is pending, and requests and
// revisions that expire unanswered on both sides.

// reasonCodes are the codes of v's reasons.
func reasonCodes(v negView) []string {
	var codes []string
	for _, r := range v.Reasons {
		codes = append(codes, r.Code)
	}
	return codes
}

// printed is the JSON negotiation a command printed.
func printed(t *testing.T, r result) negView {
	t.Helper()
	var v negView
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("%v\n%s", err, r)
	}
	return v
}

// TestWithdrawRequest: a request held by the provider's operator is withdrawn with `ssa
// cancel`; both sides end withdrawn with the same transcript, the provider's operator can no
// longer approve it, and the text views say so with the phase.
func TestWithdrawRequest(t *testing.T) {
	t.Parallel()
	prov := newAgent(t, "provider", "")
	req := newAgent(t, "requester", "")
	prov.offer("provider-manual.yaml")
	v, r := req.request(prov, testdata(t, "requester.yaml"), 0)
	if v.State != "request-sent" {
		t.Fatalf("want request-sent: %s", r)
	}
	id := v.SSAID
	prov.waitState(id, "request-received", settle)

	c := req.cli("--json", "ssa", "cancel", id, "--wait", "20s")
	if c.code != 0 || printed(t, c).State != "withdrawn" {
		t.Fatalf("withdraw: want withdrawn, exit 0: %s", c)
	}
	prov.waitState(id, "withdrawn", settle)
	sameTranscript(t, req, prov, id, "request", "cancellation", "confirmation")
	if a := prov.cli("ssa", "approve", id); a.code == 0 {
		t.Errorf("a withdrawn request was approved: %s", a)
	}
	if e := req.cli("ssa", "export", id); e.code == 0 {
		t.Errorf("a withdrawn request exports an agreement: %s", e)
	}
	show := req.must("ssa", "show", id)
	if !strings.Contains(show, "SSA "+id+": withdrawn") || !strings.Contains(show, "phase: negotiation") {
		t.Errorf("ssa show:\n%s", show)
	}
	if list := prov.must("ssa", "list"); !strings.Contains(list, "withdrawn") || !strings.Contains(list, "negotiation") {
		t.Errorf("ssa list:\n%s", list)
	}
}

// revisionHeld agrees an SSA and has the requester revise it; the provider (accept: manual)
// holds the revision. It returns the SSA in force and the revision's ID.
func revisionHeld(t *testing.T, req, prov *agent) (inForce, revision string) {
	t.Helper()
	inForce = agree(t, req, prov, testdata(t, "requester.yaml"))
	r := req.cli("--json", "ssa", "revise", inForce, "--template", testdata(t, "requester-revised.yaml"), "--wait", "0s")
	v := printed(t, r)
	if r.code != 0 || v.State != "revision-sent" || v.SSAID == inForce {
		t.Fatalf("revise: want revision-sent under a new ID, exit 0: %s", r)
	}
	p := prov.waitState(v.SSAID, "revision-received", settle)
	if !strings.Contains(p.Note, "revision held") {
		t.Errorf("the provider's note: %q", p.Note)
	}
	return inForce, v.SSAID
}

// TestCancelDuringRevision: while a revision is pending, either side cancels the SSA in force
// (the revision is dropped; both end annulled with the same signed annulment of the version in
// force), and the side holding the revision may decline it.
func TestCancelDuringRevision(t *testing.T) {
	t.Parallel()
	prov := newAgent(t, "provider", "", withConfig("accept", "manual"))
	req := newAgent(t, "requester", "")
	prov.offer("provider.yaml")
	for _, by := range []string{"requester", "provider"} {
		t.Run("cancelled by the "+by, func(t *testing.T) {
			req, prov := req.in(t), prov.in(t)
			inForce, revision := revisionHeld(t, req, prov)
			canceller := map[string]*agent{"requester": req, "provider": prov}[by]
			c := canceller.cli("--json", "ssa", "cancel", revision, "--wait", "20s")
			if v := printed(t, c); c.code != 0 || v.State != "annulled" || v.SSAID != inForce {
				t.Fatalf("cancel during the revision: want %s annulled, exit 0: %s", inForce, c)
			}
			for _, a := range []*agent{req, prov} {
				if v := a.waitState(inForce, "annulled", settle); v.SSA == nil || v.SSA.ID != inForce || v.SSA.Status != "annulment" {
					t.Errorf("%s: %+v", a.name, v.SSA)
				}
			}
			sameTranscript(t, req, prov, inForce, "request", "proposal", "acceptance", "confirmation", "revision", "cancellation", "confirmation")
			verdict, text := verifyOffline(t, sameAgreement(t, req, prov, inForce))
			if !verdict.Valid || verdict.SSA.ID != inForce || verdict.SSA.Status != "annulment" || verdict.SSA.Version != 1 {
				t.Errorf("offline verification of the annulment: %+v\n%s", verdict, text)
			}
		})
	}
	t.Run("declined by the provider", func(t *testing.T) {
		req, prov := req.in(t), prov.in(t)
		inForce, revision := revisionHeld(t, req, prov)
		d := prov.cli("--json", "ssa", "decline", revision, "--reason", "not this quarter", "--wait", "20s")
		if v := printed(t, d); d.code != 0 || v.State != "approved" || v.SSAID != inForce {
			t.Fatalf("decline the revision: want %s approved, exit 0: %s", inForce, d)
		}
		v := req.waitState(inForce, "approved", settle)
		if codes := reasonCodes(v); len(codes) != 1 || codes[0] != "declined" {
			t.Errorf("the requester's reasons %v, want declined", codes)
		}
		sameTranscript(t, req, prov, inForce, "request", "proposal", "acceptance", "confirmation", "revision", "rejection")
	})
}

// TestUnansweredExpire: a request held by the provider's operator, and a revision held by
// the provider's, expire at their validity (request-validity on the side that sent them) on
// both sides, each at its own clock; the CLI that waits for them exits 4.
func TestUnansweredExpire(t *testing.T) {
	t.Parallel()
	fast := []option{withConfig("retry-interval", "300ms")}
	t.Run("request", func(t *testing.T) {
		t.Parallel()
		prov := newAgent(t, "provider", "", fast...)
		req := newAgent(t, "requester", "", append(fast, withConfig("request-validity", "3s"))...)
		prov.offer("provider-manual.yaml")
		start := time.Now()
		v, r := req.request(prov, testdata(t, "requester.yaml"), 20*time.Second)
		if r.code != 4 || v.State != "expired" || !strings.Contains(r.stderr, "expired unanswered") {
			t.Fatalf("want expired, exit 4 saying so: %s", r)
		}
		if took := time.Since(start); took < 2*time.Second { // an SSA's times are whole seconds
			t.Errorf("expired after %s, before its validity of 3s", took)
		}
		for _, a := range []*agent{req, prov} {
			got := a.waitState(v.SSAID, "expired", settle)
			if codes := reasonCodes(got); len(codes) != 1 || codes[0] != "request-expired" {
				t.Errorf("%s: reasons %v, want request-expired", a.name, codes)
			}
		}
		sameTranscript(t, req, prov, v.SSAID, "request")
	})
	t.Run("revision", func(t *testing.T) {
		t.Parallel()
		prov := newAgent(t, "provider", "", append(fast, withConfig("accept", "manual"))...)
		req := newAgent(t, "requester", "", append(fast, withConfig("request-validity", "3s"))...)
		prov.offer("provider.yaml")
		inForce := agree(t, req, prov, testdata(t, "requester.yaml"))
		r := req.cli("--json", "ssa", "revise", inForce, "--template", testdata(t, "requester-revised.yaml"), "--wait", "20s")
		if v := printed(t, r); r.code != 4 || v.State != "approved" || v.SSAID != inForce {
			t.Fatalf("want %s approved again (the revision expired), exit 4: %s", inForce, r)
		}
		for _, a := range []*agent{req, prov} {
			got := a.waitState(inForce, "approved", settle)
			if codes := reasonCodes(got); len(codes) != 1 || codes[0] != "revision-expired" {
				t.Errorf("%s: reasons %v, want revision-expired", a.name, codes)
			}
			if got.SSA == nil || got.SSA.ID != inForce || got.Note != "" {
				t.Errorf("%s: SSA %+v, note %q; want %s in force and no note", a.name, got.SSA, got.Note, inForce)
			}
		}
		sameTranscript(t, req, prov, inForce, "request", "proposal", "acceptance", "confirmation", "revision")
		// The SSA in force can still be cancelled.
		if c := req.cli("ssa", "cancel", inForce, "--wait", "20s"); c.code != 0 {
			t.Fatalf("cancel after the revision expired: %s", c)
		}
		prov.waitState(inForce, "annulled", settle)
	})
}

// TestWithdrawUnreachable: a request to a provider that is away waits for it, and `ssa show`
// says when the next attempt is and why the last failed; withdrawn, it ends at once (failed,
// reason withdrawn), exit 0, and is no longer sent.
func TestWithdrawUnreachable(t *testing.T) {
	t.Parallel()
	prov := newAgent(t, "provider", "")
	req := newAgent(t, "requester", "")
	addr := prov.addr()
	prov.stop()
	r := req.cli("--json", "request", "--provider", addr, "--template", testdata(t, "requester.yaml"), "--wait", "0s")
	v := printed(t, r)
	if v.State != "request-sent" {
		t.Fatalf("want request-sent: %s", r)
	}
	show := req.must("ssa", "show", v.SSAID)
	if !strings.Contains(show, "waiting for the peer: next attempt ") || !strings.Contains(show, "; last error: ") {
		t.Errorf("ssa show of a request not delivered does not say when it is sent next and why it failed:\n%s", show)
	}
	c := req.cli("--json", "ssa", "cancel", v.SSAID, "--wait", "5s")
	got := printed(t, c)
	if c.code != 0 || got.State != "failed" || len(got.Reasons) != 1 || got.Reasons[0].Code != "withdrawn" {
		t.Fatalf("withdraw: want failed with reason withdrawn, exit 0: %s", c)
	}
	if show := req.must("ssa", "show", v.SSAID); strings.Contains(show, "next attempt") {
		t.Errorf("a withdrawn request is still sent:\n%s", show)
	}
}
