package protocol

import (
	"errors"
	"testing"
	"time"
)

// Tests of the life-cycle events that end what is not final: withdrawal, cancellation during
// a revision, expiry of requests and revisions, and the crossings each meets. Each checks
// that both sides end alike and that Restore rebuilds what each side holds.

// restored checks that n's transcript, with a tick at now as a driver gives it after a
// restart, rebuilds n's state and agreement.
func restored(t *testing.T, n *Negotiation, self *Identity, now time.Time) {
	t.Helper()
	m := restoreWith(t, n, self)
	if _, err := m.Step(now, Tick{}); err != nil {
		t.Fatal(err)
	}
	if m.State() != n.State() {
		t.Errorf("%s: restored in %s, was %s", n.Role(), m.State(), n.State())
	}
	if (m.Agreement() == nil) != (n.Agreement() == nil) || (m.Agreement() != nil && m.Agreement().ID != n.Agreement().ID) {
		t.Errorf("%s: restored agreement %v, was %v", n.Role(), m.Agreement(), n.Agreement())
	}
}

// both checks that both sides are in state want and hold the same agreement, of ID id.
func (pr *pair) both(want State, id string) {
	pr.t.Helper()
	for _, n := range []*Negotiation{pr.r, pr.p} {
		if n.State() != want {
			pr.t.Fatalf("%s in %s, want %s", n.Role(), n.State(), want)
		}
		got := ""
		if n.Agreement() != nil {
			got = n.Agreement().ID
		}
		if got != id {
			pr.t.Fatalf("%s holds agreement %q, want %q", n.Role(), got, id)
		}
	}
	restored(pr.t.(*testing.T), pr.r, pr.rid, pr.now)
	restored(pr.t.(*testing.T), pr.p, pr.pid, pr.now)
}

func TestWithdraw(t *testing.T) {
	t.Run("answered by a confirmation", func(t *testing.T) {
		pr := newPair(t)
		w := pr.withdraw()
		if w.Header.Type != MsgCancellation || w.SSA.Status != StatusAnnulment || w.SSA.ID != "ssa-test-1" {
			t.Fatalf("withdrawal: %s of %s, %s", w.Header.Type, w.SSA.ID, w.SSA.Status)
		}
		pout := pr.deliver(pr.p, w)
		rout := pr.deliver(pr.r, pout.Send)
		if pout.Agreement != nil || rout.Agreement != nil {
			t.Fatal("a withdrawal made an agreement")
		}
		pr.both(StateWithdrawn, "")
	})
	t.Run("crossed by the proposal", func(t *testing.T) {
		pr := newPair(t)
		w := pr.withdraw()
		if out := pr.deliver(pr.r, pr.propose()); !out.Superseded {
			t.Fatalf("proposal after the withdrawal: %+v", out)
		}
		pr.deliver(pr.r, pr.deliver(pr.p, w).Send)
		pr.both(StateWithdrawn, "")
	})
	t.Run("crossed by the rejection", func(t *testing.T) {
		pr := newPair(t)
		w := pr.withdraw()
		rej := pr.step(pr.p, Reject{[]Reason{{Code: CodeNoOffer}}}).Send
		pr.deliver(pr.p, w)
		pr.deliver(pr.r, rej)
		pr.both(StateRejected, "")
	})
	t.Run("not after the proposal was received", func(t *testing.T) {
		pr := newPair(t)
		pr.request()
		pr.deliver(pr.r, pr.propose())
		if _, err := pr.r.Step(pr.now, Cancel{}); !errors.Is(err, ErrUnexpected) {
			t.Fatalf("cancel in proposal-received: %v (the requester rejects the proposal instead)", err)
		}
	})
	t.Run("the provider's request expired first", func(t *testing.T) {
		pr := newPair(t)
		w := pr.withdraw()
		pr.now = pr.now.Add(time.Hour)
		pr.step(pr.p, Tick{})
		if _, err := pr.p.Step(pr.now, Receive{w}); !errors.Is(err, ErrUnexpected) {
			t.Fatalf("withdrawal of an expired request: %v", err)
		}
		pr.step(pr.r, Tick{})
		if pr.r.State() != StateWithdrawalSent {
			t.Fatalf("the requester gave up before MaxSkew passed: %s", pr.r.State())
		}
		pr.now = pr.now.Add(MaxSkew)
		if out := pr.step(pr.r, Tick{}); len(out.Reasons) != 1 || out.Reasons[0].Code != CodeRequestExpired {
			t.Fatalf("reasons %v", out.Reasons)
		}
		pr.both(StateExpired, "")
	})
}

// revise has side a propose a revision valid for an hour to side b, and returns it
// (delivered) with its ID.
func (pr *pair) revise(a, b *Negotiation) *Envelope {
	pr.t.Helper()
	r := pr.step(a, Revise{pr.validRevision(a)}).Send
	pr.deliver(b, r)
	return r
}

func TestCancelDuringRevision(t *testing.T) {
	for _, tc := range []struct {
		name              string
		reviser, canceler func(pr *pair) *Negotiation
	}{
		{"reviser cancels", func(pr *pair) *Negotiation { return pr.r }, func(pr *pair) *Negotiation { return pr.r }},
		{"holder cancels", func(pr *pair) *Negotiation { return pr.r }, func(pr *pair) *Negotiation { return pr.p }},
		{"provider revises, requester holds and cancels", func(pr *pair) *Negotiation { return pr.p }, func(pr *pair) *Negotiation { return pr.r }},
		{"provider revises and cancels", func(pr *pair) *Negotiation { return pr.p }, func(pr *pair) *Negotiation { return pr.p }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr := newPair(t)
			pr.approve()
			a := tc.reviser(pr)
			b := map[*Negotiation]*Negotiation{pr.r: pr.p, pr.p: pr.r}[a]
			pr.revise(a, b)
			c := tc.canceler(pr)
			d := map[*Negotiation]*Negotiation{pr.r: pr.p, pr.p: pr.r}[c]
			out := pr.deliver(d, pr.step(c, Cancel{}).Send)
			if out.Agreement == nil || out.Agreement.ID != "ssa-test-1" || out.Agreement.Status != StatusAnnulment {
				t.Fatalf("annulled %+v, want the SSA in force", out.Agreement)
			}
			pr.deliver(c, out.Send)
			pr.both(StateAnnulled, "ssa-test-1")
		})
	}
	t.Run("both cancel at once", func(t *testing.T) {
		pr := newPair(t)
		pr.approve()
		pr.revise(pr.r, pr.p)
		cr, cp := pr.step(pr.r, Cancel{}).Send, pr.step(pr.p, Cancel{}).Send
		if out := pr.deliver(pr.p, cr); !out.Superseded {
			t.Fatalf("the provider's cancellation prevails: %+v", out)
		}
		pr.deliver(pr.p, pr.deliver(pr.r, cp).Send)
		pr.both(StateAnnulled, "ssa-test-1")
	})
	for name, decide := range map[string]Event{"confirmation": Accept{}, "rejection": Reject{[]Reason{{Code: CodeDeclined}}}} {
		t.Run("crossed by the "+name+" of the revision", func(t *testing.T) {
			pr := newPair(t)
			pr.approve()
			pr.revise(pr.r, pr.p)
			answer := pr.step(pr.p, decide).Send
			c := pr.step(pr.r, Cancel{}).Send
			if out := pr.deliver(pr.p, c); !out.Superseded {
				t.Fatalf("the answer prevails: %+v", out)
			}
			pr.deliver(pr.r, answer)
			want := map[MsgType]string{MsgConfirmation: "ssa-test-2", MsgRejection: "ssa-test-1"}[answer.Header.Type]
			pr.both(StateApproved, want)
			// The cancelling side cancels again: the SSA now in force.
			pr.deliver(pr.r, pr.deliver(pr.p, pr.step(pr.r, Cancel{}).Send).Send)
			pr.both(StateAnnulled, want)
		})
	}
}

func TestRequestExpires(t *testing.T) {
	pr := newPair(t)
	pr.deliver(pr.p, pr.step(pr.r, Start{pr.validRequest()}).Send)
	pr.now = pr.now.Add(time.Hour - time.Millisecond)
	for _, n := range []*Negotiation{pr.r, pr.p} {
		if out := pr.step(n, Tick{}); n.State().Ended() || out.Reasons != nil {
			t.Fatalf("%s expired early: %s", n.Role(), n.State())
		}
	}
	pr.now = pr.now.Add(time.Millisecond)
	if _, err := pr.p.Step(pr.now, Propose{exampleRequest(t, pr.now)}); !errors.Is(err, ErrRequestExpired) || pr.p.State() != StateExpired {
		t.Fatalf("propose after the request's validity: %v, %s", err, pr.p.State())
	}
	out := pr.step(pr.r, Tick{})
	if len(out.Reasons) != 1 || out.Reasons[0].Code != CodeRequestExpired || out.Send != nil {
		t.Fatalf("the requester's tick: %+v", out)
	}
	pr.both(StateExpired, "")

	t.Run("a rejection made in time still ends it rejected", func(t *testing.T) {
		pr := newPair(t)
		pr.deliver(pr.p, pr.step(pr.r, Start{pr.validRequest()}).Send)
		rej := pr.step(pr.p, Reject{[]Reason{{Code: CodeNoOffer}}}).Send
		pr.now = pr.now.Add(time.Hour)
		pr.step(pr.r, Tick{})
		pr.deliver(pr.r, rej)
		pr.both(StateRejected, "")
	})
}

func TestRevisionExpires(t *testing.T) {
	pr := newPair(t)
	pr.approve()
	pr.revise(pr.r, pr.p)
	pr.now = pr.now.Add(time.Hour)
	if _, err := pr.p.Step(pr.now, Accept{}); !errors.Is(err, ErrRevisionExpired) || pr.p.State() != StateApproved {
		t.Fatalf("confirm after the revision's validity: %v, %s", err, pr.p.State())
	}
	out := pr.step(pr.r, Tick{})
	if len(out.Reasons) != 1 || out.Reasons[0].Code != CodeRevisionExpired || out.Send != nil {
		t.Fatalf("the reviser's tick: %+v", out)
	}
	pr.both(StateApproved, "ssa-test-1")
	// Either may revise or cancel again.
	pr.deliver(pr.p, pr.deliver(pr.r, pr.step(pr.p, Cancel{}).Send).Send)
	pr.both(StateAnnulled, "ssa-test-1")

	t.Run("a confirmation made in time still counts", func(t *testing.T) {
		pr := newPair(t)
		pr.approve()
		pr.revise(pr.p, pr.r)
		conf := pr.step(pr.r, Accept{}).Send
		pr.now = pr.now.Add(2 * time.Hour)
		pr.step(pr.p, Tick{})
		if pr.p.State() != StateApproved || pr.p.Agreement().ID != "ssa-test-1" {
			t.Fatalf("expired: %s", pr.p.State())
		}
		if out := pr.deliver(pr.p, conf); out.Agreement == nil || out.Agreement.ID != "ssa-test-2" {
			t.Fatalf("late confirmation: %+v", out)
		}
		pr.both(StateApproved, "ssa-test-2")
	})
	t.Run("and prevails over the reviser's next message", func(t *testing.T) {
		pr := newPair(t)
		pr.approve()
		pr.revise(pr.p, pr.r)
		conf := pr.step(pr.r, Accept{}).Send
		pr.now = pr.now.Add(2 * time.Hour)
		pr.step(pr.p, Tick{})
		c := pr.step(pr.p, Cancel{}).Send
		if out := pr.deliver(pr.r, c); !out.Superseded {
			t.Fatalf("the confirmation prevails: %+v", out)
		}
		pr.deliver(pr.p, conf)
		pr.both(StateApproved, "ssa-test-2")
	})
	t.Run("an answer made after it is refused", func(t *testing.T) {
		pr := newPair(t)
		pr.approve()
		pr.revise(pr.p, pr.r)
		pr.now = pr.now.Add(2 * time.Hour)
		pr.step(pr.p, Tick{})
		forged := peerMessage(t, pr.p, pr.rid, MsgConfirmation, pr.now)
		if _, err := pr.p.Step(pr.now, Receive{forged}); !errors.Is(err, ErrRevisionExpired) {
			t.Fatalf("a confirmation dated after the revision's validity: %v", err)
		}
	})
}
