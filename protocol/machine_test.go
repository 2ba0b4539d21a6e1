package protocol

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSuccessScenario(t *testing.T) {
	pr := newPair(t)
	rout, pout := pr.approve()
	if pr.r.State() != StateApproved || pr.p.State() != StateApproved {
		t.Fatalf("states %s/%s, want approved", pr.r.State(), pr.p.State())
	}
	a, err := rout.Agreement.Encode()
	if err != nil {
		t.Fatal(err)
	}
	b, err := pout.Agreement.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("the two sides hold different agreements")
	}
	signers, err := VerifySSA(rout.Agreement)
	if err != nil {
		t.Fatal(err)
	}
	if len(signers) != 2 || signers[0].Role != "requester" || signers[0].Message != MsgAcceptance ||
		signers[1].Role != "provider" || signers[1].Message != MsgConfirmation {
		t.Fatalf("signers %+v", signers)
	}
	for i, env := range pr.r.Transcript() {
		if !bytes.Equal(env.Bytes(), pr.p.Transcript()[i].Bytes()) {
			t.Fatalf("transcripts differ at message %d", i)
		}
	}
	if len(pr.r.Transcript()) != 4 {
		t.Fatalf("transcript has %d messages, want 4", len(pr.r.Transcript()))
	}
}

func TestCancelAndReviseFromEachSide(t *testing.T) {
	for _, who := range []string{"requester", "provider"} {
		t.Run("cancel by "+who, func(t *testing.T) {
			pr := newPair(t)
			pr.approve()
			a, b := pr.r, pr.p
			if who == "provider" {
				a, b = b, a
			}
			out := pr.step(a, Cancel{})
			bout := pr.deliver(b, out.Send)
			aout := pr.deliver(a, bout.Send)
			if a.State() != StateAnnulled || b.State() != StateAnnulled {
				t.Fatalf("states %s/%s", a.State(), b.State())
			}
			if aout.Agreement.Status != StatusAnnulment {
				t.Fatalf("status %s", aout.Agreement.Status)
			}
			signers, err := VerifySSA(bout.Agreement)
			if err != nil {
				t.Fatal(err)
			}
			if signers[0].Message != MsgCancellation || signers[1].Message != MsgConfirmation {
				t.Fatalf("signers %+v", signers)
			}
		})
		t.Run("revise by "+who, func(t *testing.T) {
			pr := newPair(t)
			pr.approve()
			a, b := pr.r, pr.p
			if who == "provider" {
				a, b = b, a
			}
			v2 := a.Agreement().Clone()
			v2.ID = "ssa-test-2"
			v2.Policy.Handling.TLP = TLPRed
			out := pr.step(a, Revise{v2})
			pr.deliver(b, out.Send)
			if b.State() != StateRevisionReceived {
				t.Fatalf("state %s", b.State())
			}
			bout := pr.step(b, Accept{})
			aout := pr.deliver(a, bout.Send)
			if aout.Agreement.ID != "ssa-test-2" || aout.Agreement.Version != 2 || aout.Agreement.Supersedes != "ssa-test-1" {
				t.Fatalf("agreement %s v%d supersedes %s", aout.Agreement.ID, aout.Agreement.Version, aout.Agreement.Supersedes)
			}
			if _, err := VerifySSA(aout.Agreement); err != nil {
				t.Fatal(err)
			}
			x, _ := aout.Agreement.Encode()
			y, _ := bout.Agreement.Encode()
			if !bytes.Equal(x, y) {
				t.Fatal("sides hold different v2")
			}
		})
	}
}

func TestRejections(t *testing.T) {
	t.Run("request rejected", func(t *testing.T) {
		pr := newPair(t)
		out := pr.step(pr.r, Start{exampleRequest(t, pr.now)})
		pr.deliver(pr.p, out.Send)
		reasons := []Reason{{Code: CodeInformation, Component: "information", Text: "no"}}
		out = pr.step(pr.p, Reject{reasons})
		rout := pr.deliver(pr.r, out.Send)
		if pr.r.State() != StateRejected || len(rout.Reasons) != 1 || rout.Reasons[0].Code != CodeInformation {
			t.Fatalf("state %s reasons %v", pr.r.State(), rout.Reasons)
		}
	})
	t.Run("proposal rejected", func(t *testing.T) {
		pr := newPair(t)
		out := pr.step(pr.r, Start{exampleRequest(t, pr.now)})
		pr.deliver(pr.p, out.Send)
		prop, _ := Meet(pr.p.Pending(), pr.offer, FromTime(pr.now))
		out = pr.step(pr.p, Propose{prop})
		pr.deliver(pr.r, out.Send)
		out = pr.step(pr.r, Reject{[]Reason{{Code: CodeDeclined}}})
		pr.deliver(pr.p, out.Send)
		if pr.p.State() != StateRejected || pr.r.State() != StateRejected {
			t.Fatalf("states %s/%s", pr.r.State(), pr.p.State())
		}
	})
}

func TestExpiredProposal(t *testing.T) {
	pr := newPair(t)
	out := pr.step(pr.r, Start{exampleRequest(t, pr.now)})
	pr.deliver(pr.p, out.Send)
	prop, _ := Meet(pr.p.Pending(), pr.offer, FromTime(pr.now))
	out = pr.step(pr.p, Propose{prop})
	pr.deliver(pr.r, out.Send)
	late := pr.now.Add(2 * time.Hour)
	if _, err := pr.r.Step(late, Accept{}); !errors.Is(err, ErrProposalExpired) {
		t.Fatalf("accepting an expired proposal: %v", err)
	}
	// A requester whose clock is behind sends an acceptance the provider sees too late.
	pr2 := newPair(t)
	out = pr2.step(pr2.r, Start{exampleRequest(t, pr2.now)})
	pr2.deliver(pr2.p, out.Send)
	prop, _ = Meet(pr2.p.Pending(), pr2.offer, FromTime(pr2.now))
	out = pr2.step(pr2.p, Propose{prop})
	pr2.deliver(pr2.r, out.Send)
	acc, err := pr2.r.Step(pr2.now.Add(55*time.Minute), Accept{})
	if err != nil {
		t.Fatal(err)
	}
	justLate := pr2.now.Add(time.Hour + time.Minute)
	env, _ := Open(acc.Send.Bytes())
	pout, err := pr2.p.Step(justLate, Receive{env})
	if err != nil {
		t.Fatal(err)
	}
	if pr2.p.State() != StateRejected || pout.Send.Header.Type != MsgRejection || pout.Send.Rejection.Reasons[0].Code != CodeProposalExpired {
		t.Fatalf("state %s, answer %v", pr2.p.State(), pout.Send.Header.Type)
	}
}

func TestDuplicateAnsweredWithOriginal(t *testing.T) {
	pr := newPair(t)
	out := pr.step(pr.r, Start{exampleRequest(t, pr.now)})
	pr.deliver(pr.p, out.Send)
	prop, _ := Meet(pr.p.Pending(), pr.offer, FromTime(pr.now))
	pr.deliver(pr.r, pr.step(pr.p, Propose{prop}).Send)
	acc := pr.step(pr.r, Accept{})
	first := pr.deliver(pr.p, acc.Send)
	again := pr.deliver(pr.p, acc.Send)
	if !again.Duplicate || !bytes.Equal(again.Send.Bytes(), first.Send.Bytes()) || len(again.Record) != 0 {
		t.Fatal("a repeated acceptance was not answered with the original confirmation")
	}
	if len(pr.p.Transcript()) != 4 {
		t.Fatalf("transcript grew to %d", len(pr.p.Transcript()))
	}
}

func TestRestoreFromTranscript(t *testing.T) {
	pr := newPair(t)
	pr.approve()
	for _, n := range []*Negotiation{pr.r, pr.p} {
		self := pr.rid
		if n.Role() == RoleProvider {
			self = pr.pid
		}
		m := restoreWith(t, n, self)
		if m.State() != n.State() || m.Peer() != n.Peer() || !bytes.Equal(m.ID(), n.ID()) {
			t.Fatalf("%s restored as %s", n.State(), m.State())
		}
		a, _ := m.Agreement().Encode()
		b, _ := n.Agreement().Encode()
		if !bytes.Equal(a, b) {
			t.Fatal("restored agreement differs")
		}
	}
}

// TestRevisionKeys: the provider decides a requester's revision with Satisfies against its
// offer's terms, and the requester a provider's against its request. A revision that adds a
// masking key the offer does not set is refused by the provider; a key the provider adds is
// its own business.
func TestRevisionKeys(t *testing.T) {
	cases := []struct {
		name     string
		provider bool // the provider revises
		rule     MaskRule
		conflict bool
	}{
		{"requester adds hmac under its own key", false, MaskRule{Scope: ScopeAllIP, Method: MaskHMAC, KeyID: requesterKey}, true},
		{"requester adds cryptopan under its own key", false, MaskRule{Scope: ScopeAllIP, Method: MaskCryptoPAn, KeyID: requesterKey}, true},
		{"requester adds hmac under the provider's secret key", false, MaskRule{Scope: ScopeAllIP, Method: MaskHMAC}, false},
		{"provider adds hmac under a key it chose", true, MaskRule{Scope: ScopeAllIP, Method: MaskHMAC, KeyID: requesterKey}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pr := newPair(t)
			pr.approve()
			a, b, own := pr.r, pr.p, &pr.offer.Terms
			if tc.provider {
				a, b, own = pr.p, pr.r, pr.r.Transcript()[0].SSA
			}
			v2 := a.Agreement().Clone()
			v2.ID = "ssa-test-2"
			v2.Policy.Masking = append(v2.Policy.Masking, tc.rule)
			pr.deliver(b, pr.step(a, Revise{v2}).Send)
			if b.State() != StateRevisionReceived {
				t.Fatalf("state %s", b.State())
			}
			rs := Satisfies(b.Pending(), own)
			if got := slices.ContainsFunc(rs, func(r Reason) bool { return r.Code == CodeMasking }); got != tc.conflict || len(rs) > 1 {
				t.Fatalf("the %s's check gives %v, want a masking conflict: %v", b.Role(), rs, tc.conflict)
			}
		})
	}
}

// TestRestoreRefusesTranscriptWithoutRequest: a transcript (read from local storage) must
// begin with the request, for either role; any other first message is an error, not a panic.
func TestRestoreRefusesTranscriptWithoutRequest(t *testing.T) {
	pr := newPair(t)
	pr.approve()
	rejection, err := Seal(pr.pid, Header{Type: MsgRejection, Negotiation: testNID(7), ID: testNID(9), Time: t0.UnixMilli()}, &Rejection{SSAID: "ssa-test-1"})
	if err != nil {
		t.Fatal(err)
	}
	tr := pr.r.Transcript() // request, proposal, acceptance, confirmation
	cases := []struct {
		name  string
		role  Role
		self  *Identity
		first *Envelope
	}{
		{"requester, rejection first", RoleRequester, pr.rid, rejection},
		{"provider, rejection first", RoleProvider, pr.pid, rejection},
		{"requester, proposal first", RoleRequester, pr.rid, tr[1]},
		{"provider, acceptance first", RoleProvider, pr.pid, tr[2]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, err := Restore(tc.self, tc.role, [][]byte{tc.first.Bytes()})
			if !errors.Is(err, ErrUnexpected) || n != nil || !strings.Contains(err.Error(), "begins with a request") {
				t.Fatalf("Restore: %v, %v; want ErrUnexpected", n, err)
			}
		})
	}
}

// TestAbandon: a request the peer can never receive ends failed, locally, with its reasons;
// the peer's answer, should the request reach it after all, is refused; Restore rebuilds
// request-sent and the driver abandons again.
func TestAbandon(t *testing.T) {
	pr := newPair(t)
	req := pr.step(pr.r, Start{exampleRequest(t, pr.now)}).Send
	out := pr.step(pr.r, Abandon{})
	if pr.r.State() != StateFailed || out.Send != nil || out.Record != nil || len(out.Reasons) != 1 {
		t.Fatalf("abandon: state %s, output %+v", pr.r.State(), out)
	}
	if _, err := pr.r.Step(pr.now, Abandon{}); !errors.Is(err, ErrUnexpected) {
		t.Fatalf("abandon twice: %v", err)
	}
	pr.deliver(pr.p, req)
	prop := pr.propose()
	if _, err := pr.r.Step(pr.now, Receive{prop}); !errors.Is(err, ErrUnexpected) {
		t.Fatalf("a proposal after abandon: %v", err)
	}
	m := restoreWith(t, pr.r, pr.rid)
	if m.State() != StateRequestSent {
		t.Fatalf("restored in %s", m.State())
	}
	why := []Reason{{Code: CodeUnspecified, Text: "not an ssanet peer"}}
	if out, err := m.Step(pr.now, Abandon{why}); err != nil || m.State() != StateFailed || out.Reasons[0] != why[0] {
		t.Fatalf("abandon after restore: %v, %s, %+v", err, m.State(), out)
	}
}
