package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// settle is how long a test waits for the other side of a negotiation to catch up.
const settle = 15 * time.Second

// sameTranscript checks that both agents hold the same transcript of an SSA, hash-chained,
// of the given message types, and returns it.
func sameTranscript(t *testing.T, a, b *agent, id string, types ...string) []messageView {
	t.Helper()
	ta, tb := a.transcript(id), b.transcript(id)
	if !slices.Equal(ta, tb) {
		t.Fatalf("transcripts of %s differ:\n%s: %+v\n%s: %+v", id, a.name, ta, b.name, tb)
	}
	var got []string
	for i, m := range ta {
		got = append(got, m.Type)
		if i == 0 && m.Prev != "" {
			t.Errorf("transcript of %s: first message has prev %s", id, m.Prev)
		}
		if i > 0 && m.Prev != ta[i-1].Hash {
			t.Errorf("transcript of %s: message %d (%s) has prev %s, want the hash of message %d %s", id, i+1, m.Type, m.Prev, i, ta[i-1].Hash)
		}
	}
	if !slices.Equal(got, types) {
		t.Errorf("transcript of %s: messages %v, want %v", id, got, types)
	}
	return ta
}

// sameAgreement checks that both agents export byte-identical copies of an agreed SSA and
// returns them.
func sameAgreement(t *testing.T, a, b *agent, id string) []byte {
	t.Helper()
	ea, eb := a.export(id), b.export(id)
	if !bytes.Equal(ea, eb) {
		t.Fatalf("exports of %s differ: %s has %d bytes, %s has %d", id, a.name, len(ea), b.name, len(eb))
	}
	return ea
}

// checkSigners checks a verdict's signers: role -> the message that role signed.
func checkSigners(t *testing.T, v verdict, ids map[string]string, signed map[string]string) {
	t.Helper()
	if len(v.Signers) != 2 {
		t.Fatalf("%d signers, want 2: %+v", len(v.Signers), v.Signers)
	}
	for _, s := range v.Signers {
		if s.PeerID != ids[s.Role] {
			t.Errorf("the %s signature is by %s, want %s", s.Role, s.PeerID, ids[s.Role])
		}
		if s.Message != signed[s.Role] {
			t.Errorf("the %s signed the %s, want the %s", s.Role, s.Message, signed[s.Role])
		}
	}
}

// TestAgreement: the shipped example templates fit each other; both sides end approved with
// byte-identical exports and transcripts, and a directory that was never an agent's home
// verifies the SSA offline (and refuses a tampered copy).
func TestAgreement(t *testing.T) {
	t.Parallel()
	prov := newAgent(t, "provider", "")
	req := newAgent(t, "requester", "")
	dir := t.TempDir()
	offer, tmpl := filepath.Join(dir, "provider.yaml"), filepath.Join(dir, "requester.yaml")
	for file, which := range map[string]string{offer: "provider", tmpl: "requester"} {
		if err := os.WriteFile(file, []byte(prov.must("template", "example", which)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	prov.must("offer", "add", offer)

	v, r := req.request(prov, tmpl, 20*time.Second)
	if r.code != 0 || v.State != "approved" {
		checkReasonsDecoded(t, r)
		t.Fatalf("want approved, exit 0: %s", r)
	}
	reqID, provID := req.peerID(), prov.peerID()
	if v.Role != "requester" || v.Peer != provID || v.SSA == nil || v.SSA.ID != v.SSAID || v.SSA.Version != 1 || v.SSA.Status != "approval" {
		t.Errorf("requester's view: %+v (SSA %+v)", v, v.SSA)
	}
	p := prov.waitState(v.SSAID, "approved", settle)
	if p.Role != "provider" || p.Peer != reqID || p.SSA == nil ||
		p.SSA.Participants.Requester.PeerID != reqID || p.SSA.Participants.Provider.PeerID != provID {
		t.Errorf("provider's view: %+v (SSA %+v)", p, p.SSA)
	}
	if got := p.SSA.Information; len(got) != 1 || got[0].Type != "attack-detection-log" || got[0].Format != "eve" {
		t.Errorf("agreed information %+v, want the requester's first choice attack-detection-log/eve", got)
	}
	sameTranscript(t, req, prov, v.SSAID, "request", "proposal", "acceptance", "confirmation")
	data := sameAgreement(t, req, prov, v.SSAID)

	verdict, text := verifyOffline(t, data)
	if !verdict.Valid || verdict.SSA.ID != v.SSAID || verdict.SSA.Status != "approval" || verdict.SSA.Version != 1 {
		t.Fatalf("offline verification: %+v\n%s", verdict, text)
	}
	checkSigners(t, verdict, map[string]string{"requester": reqID, "provider": provID},
		map[string]string{"requester": "acceptance", "provider": "confirmation"})
	if !strings.HasPrefix(text, "VALID: SSA "+v.SSAID+" version 1, status approval") {
		t.Errorf("verify printed:\n%s", text)
	}

	// Any change to the signed bytes must break verification; flip a byte near the end
	// (in the signatures) and one in the middle (in the terms).
	for _, at := range []int{len(data) - 10, len(data) / 2} {
		bad := slices.Clone(data)
		bad[at] ^= 0x01
		if got, text := verifyOffline(t, bad); got.Valid {
			t.Errorf("a copy with byte %d flipped verifies:\n%s", at, text)
		}
	}
}

// TestRequestRejected: a request the provider's offer cannot satisfy is rejected with one
// "conflict:" line per conflicting component, exit 3; both sides end rejected with the same
// transcript and nothing to export.
func TestRequestRejected(t *testing.T) {
	t.Parallel()
	prov := newAgent(t, "provider", "")
	req := newAgent(t, "requester", "")
	prov.offer("provider.yaml")
	for _, tc := range []struct {
		name, template, component string
	}{
		{"type not offered", "requester-blacklist.yaml", "information"},
		{"masking beyond tolerance", "requester-masking4.yaml", "policy.masking"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, prov := req.in(t), prov.in(t)
			v, r := req.request(prov, testdata(t, tc.template), 20*time.Second)
			if r.code != 3 {
				checkReasonsDecoded(t, r)
				t.Fatalf("want exit 3 (refused): %s", r)
			}
			// --json prints the negotiation; the text form prints one line per conflict.
			var conflicts []string
			text := req.cli("request", "--provider", prov.addr(), "--template", testdata(t, tc.template), "--wait", "20s")
			for _, line := range strings.Split(text.stdout, "\n") {
				if strings.HasPrefix(line, "conflict: ") {
					conflicts = append(conflicts, line)
				}
			}
			if text.code != 3 || len(conflicts) == 0 {
				t.Fatalf("want exit 3 and conflict lines: %s", text)
			}
			for _, c := range conflicts {
				if !strings.Contains(c, tc.component) {
					t.Errorf("conflict line does not name %s: %q", tc.component, c)
				}
			}
			if v.State != "rejected" || len(v.Reasons) == 0 {
				t.Fatalf("requester's view: %+v", v)
			}
			for _, rs := range v.Reasons {
				if rs.Component != tc.component {
					t.Errorf("reason %+v, want component %s", rs, tc.component)
				}
			}
			for _, a := range []*agent{req, prov} {
				if r := a.cli("ssa", "export", v.SSAID); r.code == 0 {
					t.Errorf("%s exports a rejected SSA: %s", a.name, r)
				}
			}
			// The provider decided at once: look its negotiation up by the SSA it carries,
			// then by its ID.
			var p *negView
			for _, n := range prov.list() {
				if n.SSA != nil && n.SSA.ID == v.SSAID {
					p = &n
				}
			}
			if p == nil || p.State != "rejected" || !slices.Equal(p.Reasons, v.Reasons) {
				t.Fatalf("provider's negotiation of %s: %+v; want rejected with the requester's reasons %+v", v.SSAID, p, v.Reasons)
			}
			if p.SSAID != v.SSAID {
				t.Fatalf("the provider files a request it rejects at once under SSA ID %q, not %s", p.SSAID, v.SSAID)
			}
			sameTranscript(t, req, prov, v.SSAID, "request", "rejection")
		})
	}
}

// TestProposalDeclined: a requester whose config says accept: manual holds the proposal for
// its operator, who declines it; both sides end rejected with the operator's reason.
func TestProposalDeclined(t *testing.T) {
	t.Parallel()
	prov := newAgent(t, "provider", "")
	req := newAgent(t, "requester", "", withConfig("accept", "manual"))
	prov.offer("provider.yaml")

	v, r := req.request(prov, testdata(t, "requester.yaml"), 20*time.Second)
	if r.code != 0 || v.State != "proposal-received" {
		t.Fatalf("want the proposal held, exit 0: %s", r)
	}
	if !strings.Contains(v.Note, "ssa approve|decline") {
		t.Errorf("the held proposal's note does not say what to do: %q", v.Note)
	}
	prov.waitState(v.SSAID, "proposal-sent", settle)

	const why = "retention too long for our policy"
	d := req.cli("--json", "ssa", "decline", v.SSAID, "--reason", why)
	checkReasonsDecoded(t, d)
	if d.code != 0 && d.code != 3 {
		t.Fatalf("decline: %s", d)
	}
	if d.code == 3 {
		t.Logf("note: ssa decline of a held proposal exits 3 (refused by the peer), though this side refused")
	}
	for _, a := range []*agent{req, prov} {
		got := a.waitState(v.SSAID, "rejected", settle)
		if len(got.Reasons) != 1 || got.Reasons[0].Code != "declined" || got.Reasons[0].Text != why {
			t.Errorf("%s: reasons %+v, want one declined: %q", a.name, got.Reasons, why)
		}
	}
	sameTranscript(t, req, prov, v.SSAID, "request", "proposal", "rejection")
}

// TestCancel: either party cancels an approved SSA; both end annulled, with byte-identical
// exports of the annulment that carry the canceller's signature on the cancellation and the
// other party's on its confirmation.
func TestCancel(t *testing.T) {
	t.Parallel()
	prov := newAgent(t, "provider", "")
	req := newAgent(t, "requester", "")
	prov.offer("provider.yaml")
	ids := map[string]string{"requester": req.peerID(), "provider": prov.peerID()}
	for _, tc := range []struct {
		by, other string
	}{
		{"requester", "provider"},
		{"provider", "requester"},
	} {
		t.Run("by "+tc.by, func(t *testing.T) {
			req, prov := req.in(t), prov.in(t)
			id := agree(t, req, prov, testdata(t, "requester.yaml"))
			agents := map[string]*agent{"requester": req, "provider": prov}
			canceller, other := agents[tc.by], agents[tc.other]
			var v negView
			canceller.query(&v, "ssa", "cancel", id, "--wait", "20s")
			if v.State != "annulled" {
				t.Fatalf("%s after cancel: %+v", tc.by, v)
			}
			o := other.waitState(id, "annulled", settle)
			if o.SSA == nil || o.SSA.Status != "annulment" || o.SSA.ID != id {
				t.Errorf("%s's SSA after the cancellation: %+v", tc.other, o.SSA)
			}
			sameTranscript(t, req, prov, id, "request", "proposal", "acceptance", "confirmation", "cancellation", "confirmation")
			data := sameAgreement(t, req, prov, id)
			verdict, text := verifyOffline(t, data)
			if !verdict.Valid || verdict.SSA.Status != "annulment" || verdict.SSA.ID != id {
				t.Fatalf("offline verification of the annulment: %+v\n%s", verdict, text)
			}
			checkSigners(t, verdict, ids, map[string]string{tc.by: "cancellation", tc.other: "confirmation"})
			if r := canceller.cli("ssa", "cancel", id); r.code == 0 {
				t.Errorf("an annulled SSA was cancelled again: %s", r)
			}
		})
	}
}

// TestRevision: the requester revises an approved SSA; both sides hold version 2, which
// supersedes version 1, list both versions, and export the same signed v2.
func TestRevision(t *testing.T) {
	t.Parallel()
	prov := newAgent(t, "provider", "")
	req := newAgent(t, "requester", "")
	prov.offer("provider.yaml")
	v1 := agree(t, req, prov, testdata(t, "requester.yaml"))

	var v negView
	req.query(&v, "ssa", "revise", v1, "--template", testdata(t, "requester-revised.yaml"), "--wait", "20s")
	if v.State != "approved" || v.SSA == nil {
		t.Fatalf("requester after the revision: %+v", v)
	}
	v2 := v.SSA.ID
	if v2 == v1 || v.SSAID != v2 || v.SSA.Version != 2 || v.SSA.Supersedes != v1 || v.SSA.Status != "approval" {
		t.Fatalf("revised SSA: id %s version %d supersedes %q status %s; want a new ID, version 2, superseding %s",
			v2, v.SSA.Version, v.SSA.Supersedes, v.SSA.Status, v1)
	}
	p := prov.waitState(v2, "approved", settle)
	for _, a := range []*agent{req, prov} {
		for _, id := range []string{v1, v2} {
			got := a.show(id)
			if got.SSAID != v2 || got.SSA == nil || got.SSA.Version != 2 || !slices.Equal(got.Versions, []string{v1, v2}) {
				t.Errorf("%s: ssa show %s: SSA %s, versions %v (SSA %+v); want %s and versions [%s %s]",
					a.name, id, got.SSAID, got.Versions, got.SSA, v2, v1, v2)
			}
		}
	}
	if p.SSA.Supersedes != v1 {
		t.Errorf("provider's v2 supersedes %q, want %s", p.SSA.Supersedes, v1)
	}
	if len(p.Reasons) > 0 || len(v.Reasons) > 0 {
		t.Errorf("an approved revision shows reasons: provider %+v, requester %+v", p.Reasons, v.Reasons)
	}
	sameTranscript(t, req, prov, v2, "request", "proposal", "acceptance", "confirmation", "revision", "confirmation")
	data := sameAgreement(t, req, prov, v2)
	verdict, text := verifyOffline(t, data)
	if !verdict.Valid || verdict.SSA.ID != v2 || verdict.SSA.Version != 2 || verdict.SSA.Supersedes != v1 {
		t.Fatalf("offline verification of v2: %+v\n%s", verdict, text)
	}
	old := sameAgreement(t, req, prov, v1)
	if verdict, text := verifyOffline(t, old); !verdict.Valid || verdict.SSA.Version != 1 {
		t.Errorf("offline verification of v1: %+v\n%s", verdict, text)
	}

	t.Run("rejected, then approved", func(t *testing.T) {
		testRevisionRejected(t, req.in(t), prov.in(t), v1, v2)
	})
}

// testRevisionRejected: a revision the provider's offer does not allow (public IP addresses
// unmasked) is rejected: the CLI says so (exit 3, a conflict line per component) and v2 stays
// in force on both sides. A later revision that is approved leaves no reasons of the rejected
// one behind.
func testRevisionRejected(t *testing.T, req, prov *agent, v1, v2 string) {
	bad := req.cli("ssa", "revise", v2, "--template", testdata(t, "revision-unmasked.yaml"), "--wait", "20s")
	checkReasonsDecoded(t, bad)
	if bad.code != 3 || !strings.Contains(bad.stdout, "conflict: ") || !strings.Contains(bad.stdout, "policy.masking") {
		t.Errorf("a rejected revision: want exit 3 and conflict lines naming policy.masking: %s", bad)
	}
	for _, a := range []*agent{req, prov} {
		got := a.waitState(v2, "approved", settle)
		if got.SSAID != v2 || got.SSA == nil || got.SSA.Version != 2 {
			t.Errorf("%s after the rejected revision: %s version %v, want %s version 2", a.name, got.SSAID, got.SSA, v2)
		}
	}
	sameTranscript(t, req, prov, v2, "request", "proposal", "acceptance", "confirmation", "revision", "confirmation", "revision", "rejection")

	var v3 negView
	req.query(&v3, "ssa", "revise", v2, "--template", testdata(t, "requester-revised.yaml"), "--wait", "20s")
	if v3.State != "approved" || v3.SSA == nil || v3.SSA.Version != 3 || v3.SSA.Supersedes != v2 {
		t.Fatalf("requester after the third revision: %+v (SSA %+v)", v3, v3.SSA)
	}
	p3 := prov.waitState(v3.SSAID, "approved", settle)
	if len(v3.Reasons) > 0 || len(p3.Reasons) > 0 {
		t.Errorf("version 3 is approved but still shows the reasons of the rejected revision: requester %+v, provider %+v", v3.Reasons, p3.Reasons)
	}
	if !slices.Equal(p3.Versions, []string{v1, v2, v3.SSAID}) {
		t.Errorf("provider lists versions %v, want [%s %s %s]", p3.Versions, v1, v2, v3.SSAID)
	}
}

// TestManualApproval: an offer with approval: manual holds each request; the requester sees
// request-sent until the provider's operator approves (then both are approved) or declines
// (then both are rejected with the operator's reason).
func TestManualApproval(t *testing.T) {
	t.Parallel()
	prov := newAgent(t, "provider", "")
	req := newAgent(t, "requester", "")
	prov.offer("provider-manual.yaml")

	held := func(t *testing.T) string {
		t.Helper()
		req, prov := req.in(t), prov.in(t)
		v, r := req.request(prov, testdata(t, "requester.yaml"), 0)
		if v.State != "request-sent" {
			t.Fatalf("want request-sent: %s", r)
		}
		if r.code != 0 {
			t.Logf("note: a request held by the provider exits %d: %s", r.code, strings.TrimSpace(r.stderr))
		}
		p := prov.waitState(v.SSAID, "request-received", settle)
		if !strings.Contains(p.Note, "ssa approve|decline") {
			t.Errorf("the held request's note does not say what to do: %q", p.Note)
		}
		if got := req.show(v.SSAID); got.State != "request-sent" {
			t.Errorf("requester before the decision: %s, want request-sent", got.State)
		}
		return v.SSAID
	}

	t.Run("approve", func(t *testing.T) {
		req, prov := req.in(t), prov.in(t)
		id := held(t)
		var v negView
		prov.query(&v, "ssa", "approve", id, "--wait", "20s")
		if v.State != "approved" {
			t.Fatalf("provider after approve: %+v", v)
		}
		req.waitState(id, "approved", settle)
		sameTranscript(t, req, prov, id, "request", "proposal", "acceptance", "confirmation")
		if verdict, text := verifyOffline(t, sameAgreement(t, req, prov, id)); !verdict.Valid {
			t.Errorf("offline verification: %+v\n%s", verdict, text)
		}
		if r := prov.cli("ssa", "approve", id); r.code == 0 {
			t.Errorf("an approved SSA was approved again: %s", r)
		}
	})
	t.Run("decline", func(t *testing.T) {
		req, prov := req.in(t), prov.in(t)
		id := held(t)
		const why = "we do not share with this community"
		d := prov.cli("--json", "ssa", "decline", id, "--reason", why)
		checkReasonsDecoded(t, d)
		if d.code != 0 && d.code != 3 {
			t.Fatalf("decline: %s", d)
		}
		for _, a := range []*agent{req, prov} {
			got := a.waitState(id, "rejected", settle)
			if len(got.Reasons) != 1 || got.Reasons[0].Code != "declined" || got.Reasons[0].Text != why {
				t.Errorf("%s: reasons %+v, want one declined: %q", a.name, got.Reasons, why)
			}
		}
		sameTranscript(t, req, prov, id, "request", "rejection")
	})
}
