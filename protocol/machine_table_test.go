package protocol

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// This file walks the whole (role × state × event) table of the negotiation: every state of
// the state list, every one of the seven message types received from the peer and every local
// event. Each cell is either a transition of the transitions table, checked for its next
// state and its output, or a refusal with ErrUnexpected that leaves the negotiation as it
// was. Which of the two is decided from the transitions table itself, not from a second copy
// of it, and the test fails if an edge of the table is never taken.

// placement is one way of bringing a negotiation into a state through real flows.
type placement struct {
	name  string
	role  Role
	state State
	// build returns the negotiation, the peer it negotiates with and the current time.
	build func(t testing.TB) (n *Negotiation, peer *Identity, now time.Time)
}

// automatic are the states in which the protocol leaves no choice: the message that entered
// them is answered at once (by Step, or by a Tick after Restore). Local decisions there are
// refused even though the transitions table lists the answer's edge.
var automatic = map[State]bool{StateAcceptanceReceived: true, StateCancellationReceived: true, StateWithdrawalReceived: true}

// unreachable are the states a role never enters; the test proves it from the table.
var unreachable = map[Role][]State{
	RoleRequester: {StateRequestReceived, StateProposalSent, StateAcceptanceReceived, StateWithdrawalReceived},
	RoleProvider:  {StateRequestSent, StateProposalReceived, StateAcceptanceSent, StateFailed, StateWithdrawalSent},
}

// Flows used to place negotiations.

// request sends the requester's request and has the provider receive it.
func (pr *pair) request() {
	pr.t.Helper()
	pr.deliver(pr.p, pr.step(pr.r, Start{exampleRequest(pr.t, pr.now)}).Send)
}

// propose has the provider answer the pending request with the meet; it returns the proposal.
func (pr *pair) propose() *Envelope {
	pr.t.Helper()
	prop, conflicts := Meet(pr.p.Pending(), pr.offer, FromTime(pr.now))
	if conflicts != nil {
		pr.t.Fatalf("meet: %v", conflicts)
	}
	return pr.step(pr.p, Propose{prop}).Send
}

// validRequest is the example request, valid for an hour.
func (pr *pair) validRequest() *SSA {
	s := exampleRequest(pr.t, pr.now)
	s.Expires = FromTime(pr.now.Add(time.Hour))
	return s
}

// withdraw has the requester withdraw its request, valid for an hour, and returns the
// withdrawal (the provider has received the request).
func (pr *pair) withdraw() *Envelope {
	pr.t.Helper()
	pr.deliver(pr.p, pr.step(pr.r, Start{pr.validRequest()}).Send)
	return pr.step(pr.r, Cancel{}).Send
}

// validRevision is revisedSSA, valid for an hour.
func (pr *pair) validRevision(n *Negotiation) *SSA {
	v := revisedSSA(n, "ssa-test-2")
	v.Expires = FromTime(pr.now.Add(time.Hour))
	return v
}

// revisedSSA is the SSA in force of n, under a new ID and with a stricter TLP.
func revisedSSA(n *Negotiation, id string) *SSA {
	v := n.Agreement().Clone()
	v.ID = id
	if v.Policy == nil {
		v.Policy = &Policy{}
	}
	v.Policy.Handling = &Handling{TLP: TLPRed}
	return v
}

// restoreWith rebuilds n's negotiation, as self, from its transcript followed by more, as an
// agent does from its store (more: a received message persisted but not answered yet).
func restoreWith(t testing.TB, n *Negotiation, self *Identity, more ...*Envelope) *Negotiation {
	t.Helper()
	var raw [][]byte
	for _, e := range append(slices.Clone(n.Transcript()), more...) {
		raw = append(raw, e.Bytes())
	}
	m, err := Restore(self, n.Role(), raw)
	if err != nil {
		t.Fatalf("restore the %s: %v", n.Role(), err)
	}
	return m
}

// lateAcceptance runs a negotiation whose acceptance reaches the provider after the proposal
// expired; both sides end rejected.
func (pr *pair) lateAcceptance() time.Time {
	pr.t.Helper()
	pr.request()
	pr.deliver(pr.r, pr.propose())
	acc, err := pr.r.Step(pr.now.Add(55*time.Minute), Accept{})
	if err != nil {
		pr.t.Fatal(err)
	}
	pr.now = pr.now.Add(61 * time.Minute)
	pr.deliver(pr.r, pr.deliver(pr.p, acc.Send).Send)
	return pr.now
}

func placements() []placement {
	var ps []placement
	add := func(role Role, state State, name string, f func(pr *pair) *Negotiation) {
		ps = append(ps, placement{name: name, role: role, state: state, build: func(t testing.TB) (*Negotiation, *Identity, time.Time) {
			pr := newPair(t)
			n := f(pr)
			if role == RoleRequester {
				return n, pr.pid, pr.now
			}
			return n, pr.rid, pr.now
		}})
	}
	for _, role := range []Role{RoleRequester, RoleProvider} {
		self := func(pr *pair) *Negotiation {
			if role == RoleRequester {
				return pr.r
			}
			return pr.p
		}
		other := func(pr *pair) *Negotiation {
			if role == RoleRequester {
				return pr.p
			}
			return pr.r
		}
		selfID := func(pr *pair) *Identity {
			if role == RoleRequester {
				return pr.rid
			}
			return pr.pid
		}
		add(role, StateNew, "fresh", self)
		add(role, StateApproved, "confirmed", func(pr *pair) *Negotiation { pr.approve(); return self(pr) })
		add(role, StateApproved, "own revision confirmed", func(pr *pair) *Negotiation {
			pr.approve()
			pr.deliver(other(pr), pr.step(self(pr), Revise{revisedSSA(self(pr), "ssa-test-2")}).Send)
			pr.deliver(self(pr), pr.step(other(pr), Accept{}).Send)
			return self(pr)
		})
		add(role, StateApproved, "peer's revision rejected", func(pr *pair) *Negotiation {
			pr.approve()
			pr.deliver(self(pr), pr.step(other(pr), Revise{revisedSSA(other(pr), "ssa-test-2")}).Send)
			pr.step(self(pr), Reject{[]Reason{{Code: CodeDeclined}}})
			return self(pr)
		})
		add(role, StateCancellationSent, "cancelled", func(pr *pair) *Negotiation {
			pr.approve()
			pr.step(self(pr), Cancel{})
			return self(pr)
		})
		add(role, StateCancellationReceived, "restored before the confirmation", func(pr *pair) *Negotiation {
			pr.approve()
			return restoreWith(pr.t, self(pr), selfID(pr), pr.step(other(pr), Cancel{}).Send)
		})
		add(role, StateRevisionSent, "revised", func(pr *pair) *Negotiation {
			pr.approve()
			pr.step(self(pr), Revise{revisedSSA(self(pr), "ssa-test-2")})
			return self(pr)
		})
		add(role, StateRevisionReceived, "peer revised", func(pr *pair) *Negotiation {
			pr.approve()
			pr.deliver(self(pr), pr.step(other(pr), Revise{revisedSSA(other(pr), "ssa-test-2")}).Send)
			return self(pr)
		})
		add(role, StateRejected, "request rejected", func(pr *pair) *Negotiation {
			pr.request()
			pr.deliver(pr.r, pr.step(pr.p, Reject{[]Reason{{Code: CodeNoOffer}}}).Send)
			return self(pr)
		})
		add(role, StateRejected, "proposal rejected", func(pr *pair) *Negotiation {
			pr.request()
			pr.deliver(pr.r, pr.propose())
			pr.deliver(pr.p, pr.step(pr.r, Reject{[]Reason{{Code: CodeDeclined}}}).Send)
			return self(pr)
		})
		add(role, StateRejected, "acceptance too late", func(pr *pair) *Negotiation { pr.lateAcceptance(); return self(pr) })
		add(role, StateWithdrawn, "withdrawn", func(pr *pair) *Negotiation {
			pr.deliver(pr.r, pr.deliver(pr.p, pr.withdraw()).Send)
			return self(pr)
		})
		add(role, StateWithdrawn, "withdrawal crossed the proposal", func(pr *pair) *Negotiation {
			w := pr.withdraw()
			prop := pr.propose()
			if out := pr.deliver(pr.r, prop); !out.Superseded {
				pr.t.Fatalf("the proposal that crossed the withdrawal: %+v", out)
			}
			pr.deliver(pr.r, pr.deliver(pr.p, w).Send)
			return self(pr)
		})
		add(role, StateRejected, "withdrawal crossed the rejection", func(pr *pair) *Negotiation {
			w := pr.withdraw()
			rej := pr.step(pr.p, Reject{[]Reason{{Code: CodeNoOffer}}}).Send
			if out := pr.deliver(pr.p, w); !out.Superseded {
				pr.t.Fatalf("the withdrawal that crossed the rejection: %+v", out)
			}
			pr.deliver(pr.r, rej)
			return self(pr)
		})
		add(role, StateApproved, "own revision expired", func(pr *pair) *Negotiation {
			pr.approve()
			pr.deliver(other(pr), pr.step(self(pr), Revise{pr.validRevision(self(pr))}).Send)
			pr.now = pr.now.Add(time.Hour)
			pr.step(self(pr), Tick{})
			return self(pr)
		})
		add(role, StateApproved, "peer's revision expired", func(pr *pair) *Negotiation {
			pr.approve()
			pr.deliver(self(pr), pr.step(other(pr), Revise{pr.validRevision(other(pr))}).Send)
			pr.now = pr.now.Add(time.Hour)
			pr.step(self(pr), Tick{})
			return self(pr)
		})
		add(role, StateRevisionSent, "revised with validity", func(pr *pair) *Negotiation {
			pr.approve()
			pr.step(self(pr), Revise{pr.validRevision(self(pr))})
			return self(pr)
		})
		add(role, StateRevisionReceived, "peer revised with validity", func(pr *pair) *Negotiation {
			pr.approve()
			pr.deliver(self(pr), pr.step(other(pr), Revise{pr.validRevision(other(pr))}).Send)
			return self(pr)
		})
		add(role, StateCancellationSent, "cancelled during own revision", func(pr *pair) *Negotiation {
			pr.approve()
			pr.deliver(other(pr), pr.step(self(pr), Revise{pr.validRevision(self(pr))}).Send)
			pr.step(self(pr), Cancel{})
			return self(pr)
		})
		add(role, StateCancellationSent, "cancelled during peer's revision", func(pr *pair) *Negotiation {
			pr.approve()
			pr.deliver(self(pr), pr.step(other(pr), Revise{pr.validRevision(other(pr))}).Send)
			pr.step(self(pr), Cancel{})
			return self(pr)
		})
		add(role, StateAnnulled, "cancelled during a revision", func(pr *pair) *Negotiation {
			pr.approve()
			pr.deliver(self(pr), pr.step(other(pr), Revise{pr.validRevision(other(pr))}).Send)
			pr.deliver(self(pr), pr.deliver(other(pr), pr.step(self(pr), Cancel{}).Send).Send)
			return self(pr)
		})
		add(role, StateAnnulled, "cancellation crossed the confirmation of a revision", func(pr *pair) *Negotiation {
			pr.approve()
			pr.deliver(other(pr), pr.step(self(pr), Revise{pr.validRevision(self(pr))}).Send)
			conf := pr.step(other(pr), Accept{}).Send
			c := pr.step(self(pr), Cancel{}).Send
			if out := pr.deliver(other(pr), c); !out.Superseded {
				pr.t.Fatalf("the cancellation that crossed the confirmation: %+v", out)
			}
			pr.deliver(self(pr), conf) // the revision is in force
			pr.deliver(self(pr), pr.deliver(other(pr), pr.step(self(pr), Cancel{}).Send).Send)
			return self(pr)
		})
		add(role, StateAnnulled, "cancelled by requester", func(pr *pair) *Negotiation {
			pr.approve()
			pr.deliver(pr.r, pr.deliver(pr.p, pr.step(pr.r, Cancel{}).Send).Send)
			return self(pr)
		})
		add(role, StateAnnulled, "cancelled by provider", func(pr *pair) *Negotiation {
			pr.approve()
			pr.deliver(pr.p, pr.deliver(pr.r, pr.step(pr.p, Cancel{}).Send).Send)
			return self(pr)
		})
	}
	r, p := RoleRequester, RoleProvider
	add(r, StateRequestSent, "started", func(pr *pair) *Negotiation { pr.step(pr.r, Start{exampleRequest(pr.t, pr.now)}); return pr.r })
	add(r, StateFailed, "abandoned", func(pr *pair) *Negotiation {
		pr.step(pr.r, Start{exampleRequest(pr.t, pr.now)})
		pr.step(pr.r, Abandon{[]Reason{{Code: CodeUnspecified, Text: "not an ssanet peer"}}})
		return pr.r
	})
	add(r, StateRequestSent, "started with validity", func(pr *pair) *Negotiation { pr.step(pr.r, Start{pr.validRequest()}); return pr.r })
	add(r, StateWithdrawalSent, "withdrawing", func(pr *pair) *Negotiation { pr.withdraw(); return pr.r })
	add(r, StateExpired, "request expired", func(pr *pair) *Negotiation {
		pr.step(pr.r, Start{pr.validRequest()})
		pr.now = pr.now.Add(time.Hour)
		pr.step(pr.r, Tick{})
		return pr.r
	})
	add(r, StateProposalReceived, "proposal received", func(pr *pair) *Negotiation { pr.request(); pr.deliver(pr.r, pr.propose()); return pr.r })
	add(r, StateAcceptanceSent, "accepted", func(pr *pair) *Negotiation {
		pr.request()
		pr.deliver(pr.r, pr.propose())
		pr.step(pr.r, Accept{})
		return pr.r
	})
	add(r, StateExpired, "proposal expired", func(pr *pair) *Negotiation {
		pr.request()
		pr.deliver(pr.r, pr.propose())
		pr.now = pr.now.Add(2 * time.Hour)
		pr.step(pr.r, Tick{})
		return pr.r
	})
	add(p, StateRequestReceived, "request received", func(pr *pair) *Negotiation { pr.request(); return pr.p })
	add(p, StateRequestReceived, "request with validity received", func(pr *pair) *Negotiation {
		pr.deliver(pr.p, pr.step(pr.r, Start{pr.validRequest()}).Send)
		return pr.p
	})
	add(p, StateWithdrawalReceived, "restored before the confirmation of a withdrawal", func(pr *pair) *Negotiation {
		return restoreWith(pr.t, pr.p, pr.pid, pr.withdraw())
	})
	add(p, StateExpired, "request expired", func(pr *pair) *Negotiation {
		pr.deliver(pr.p, pr.step(pr.r, Start{pr.validRequest()}).Send)
		pr.now = pr.now.Add(time.Hour)
		pr.step(pr.p, Tick{})
		return pr.p
	})
	add(p, StateProposalSent, "proposed", func(pr *pair) *Negotiation { pr.request(); pr.propose(); return pr.p })
	add(p, StateAcceptanceReceived, "restored before the confirmation", func(pr *pair) *Negotiation {
		pr.request()
		pr.deliver(pr.r, pr.propose())
		return restoreWith(pr.t, pr.p, pr.pid, pr.step(pr.r, Accept{}).Send)
	})
	add(p, StateExpired, "proposal expired", func(pr *pair) *Negotiation {
		pr.request()
		pr.propose()
		pr.now = pr.now.Add(2 * time.Hour)
		pr.step(pr.p, Tick{})
		return pr.p
	})
	return ps
}

// peerMessageID is an ID for the peer's message at position pos of our transcript, unlike
// any the peer's machine gave (after a crossing, the peer's transcript is longer than ours).
func peerMessageID(nid []byte, from peer.ID, pos int) []byte {
	h := sha256.New()
	h.Write(nid)
	h.Write([]byte(from))
	h.Write([]byte{byte(pos >> 8), byte(pos), 't'})
	return h.Sum(nil)[:16]
}

// baseSSA is the SSA a message of n's negotiation is about: the pending one, else the one in
// force, else the example request.
func baseSSA(t testing.TB, n *Negotiation, now time.Time) *SSA {
	switch {
	case n.Pending() != nil:
		return n.Pending().Clone()
	case n.Agreement() != nil:
		s := n.Agreement().Clone()
		s.Signatures = nil
		return s
	}
	return exampleRequest(t, now)
}

// peerMessage is the message of type typ that an honest peer would send next in n's
// negotiation at time now: signed by the peer, chained to n's transcript, under n's
// negotiation ID, with the body its type calls for. It has been through Open.
func peerMessage(t testing.TB, n *Negotiation, from *Identity, typ MsgType, now time.Time) *Envelope {
	t.Helper()
	nid := n.ID()
	if nid == nil {
		nid = testNID(7)
	}
	tr := n.Transcript()
	h := Header{Type: typ, Negotiation: nid, ID: peerMessageID(nid, from.PeerID(), len(tr)), Time: now.UnixMilli()}
	if len(tr) > 0 {
		h.Prev = tr[len(tr)-1].Hash()
	}
	var body any
	s := baseSSA(t, n, now)
	switch typ {
	case MsgRequest:
		s = exampleRequest(t, now)
		s.Status = StatusProposal
		s.Participants.Requester.PeerID = from.PeerID().String()
		s.Participants.Provider.PeerID = n.self.PeerID().String()
	case MsgProposal:
		req := s
		if len(tr) > 0 && tr[0].SSA != nil {
			req = tr[0].SSA
		}
		prop, conflicts := Meet(req, exampleOffer(t, now), FromTime(now))
		if conflicts != nil {
			t.Fatalf("meet: %v", conflicts)
		}
		prop.Participants.Provider.PeerID = from.PeerID().String()
		s = prop
	case MsgAcceptance:
		if p := n.proposal(); p != nil {
			s = p.Clone()
		}
		s.Status, s.Date, s.Expires = StatusApproval, FromTime(now), 0
	case MsgRejection:
		body = &Rejection{SSAID: s.ID, Reasons: []Reason{{Code: CodeDeclined, Text: "declined by the peer"}}}
	case MsgCancellation:
		// The SSA in force or, before there is one, the request (a withdrawal).
		switch {
		case n.Agreement() != nil:
			s = n.Agreement().Clone()
		case len(tr) > 0:
			s = tr[0].SSA.Clone()
		}
		s.Status, s.Signatures = StatusAnnulment, nil
	case MsgRevision:
		if a := n.Agreement(); a != nil {
			s.Version, s.Supersedes = a.Version+1, a.ID
		}
		s.ID, s.Status, s.Date, s.Expires = "ssa-peer-revision", StatusApproval, FromTime(now), 0
	case MsgConfirmation:
		// The SSA of the message it confirms, unchanged.
	}
	if body == nil {
		body = s
	}
	env, err := Seal(from, h, body)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Open(env.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// snapshot is what a refused event must leave unchanged.
type snapshot struct {
	state      State
	transcript []*Envelope
	agreed     *SSA
	pending    *SSA
	id         []byte
	peer       peer.ID
}

func snap(n *Negotiation) snapshot {
	return snapshot{n.State(), slices.Clone(n.Transcript()), n.Agreement(), n.Pending(), slices.Clone(n.ID()), n.Peer()}
}

func (s snapshot) check(n *Negotiation) error {
	switch {
	case n.State() != s.state:
		return fmt.Errorf("state changed from %s to %s", s.state, n.State())
	case !slices.Equal(n.Transcript(), s.transcript):
		return fmt.Errorf("transcript changed from %d to %d messages", len(s.transcript), len(n.Transcript()))
	case n.Agreement() != s.agreed || n.Pending() != s.pending:
		return errors.New("the agreement or the pending SSA changed")
	case !slices.Equal(n.ID(), s.id) || n.Peer() != s.peer:
		return errors.New("the negotiation ID or the peer changed")
	}
	return nil
}

// lookup reads the transitions table as the machine does.
func lookup(role Role, s State, t MsgType, out bool) (edge, State, bool) {
	if next, ok := transitions[edge{role, s, t, out}]; ok {
		return edge{role, s, t, out}, next, true
	}
	next, ok := transitions[edge{0, s, t, out}]
	return edge{0, s, t, out}, next, ok
}

// proposalExpired reports whether the last proposal of n's transcript is past its validity.
func proposalExpired(n *Negotiation, now time.Time) bool {
	p := n.proposal()
	return p != nil && p.Expires != 0 && !now.Before(p.Expires.Std())
}

// pendingExpired reports whether the pending SSA of n is past its validity at now.
func pendingExpired(n *Negotiation, now time.Time) bool {
	p := n.Pending()
	return p != nil && p.Expires != 0 && !now.Before(p.Expires.Std())
}

// expectation is what the table says a cell must do.
type expectation struct {
	refused bool
	next    State     // the state after the step
	sent    MsgType   // the message the negotiation sends, 0 for none
	got     *Envelope // the message received, if the event is a Receive
	agreed  bool      // a confirmation was applied: Output.Agreement is set
	reasons bool      // a rejection was applied: Output.Reasons is set
	edges   []edge    // the table's edges taken
}

// answer completes e for a step that entered an automatic state at time now.
func (e *expectation) answer(role Role, n *Negotiation, now time.Time) {
	if !automatic[e.next] {
		return
	}
	t := MsgConfirmation
	if e.next == StateAcceptanceReceived && proposalExpired(n, now) {
		t = MsgRejection
	}
	ed, next, ok := lookup(role, e.next, t, true)
	if !ok {
		panic(fmt.Sprintf("the table has no answer to leave %s", e.next))
	}
	e.next, e.sent, e.edges = next, t, append(e.edges, ed)
	e.agreed, e.reasons = t == MsgConfirmation && next != StateWithdrawn, t == MsgRejection
}

func expectReceive(role Role, n *Negotiation, env *Envelope, now time.Time) expectation {
	t := env.Header.Type
	ed, next, ok := lookup(role, n.State(), t, false)
	if !ok || (t == MsgAcceptance && n.proposal() == nil) { // a request that expired has no proposal to accept
		return expectation{refused: true}
	}
	e := expectation{next: next, got: env, agreed: t == MsgConfirmation && next != StateWithdrawn, reasons: t == MsgRejection, edges: []edge{ed}}
	e.answer(role, n, now)
	return e
}

// local events, by name, and the message each sends when the table allows it.
var localEvents = []string{"start", "propose", "accept", "reject", "cancel", "revise", "tick", "tick after validity", "abandon"}

func localMessage(name string, s State) MsgType {
	switch name {
	case "start":
		return MsgRequest
	case "propose":
		return MsgProposal
	case "accept":
		if s == StateProposalReceived {
			return MsgAcceptance
		}
		return MsgConfirmation
	case "reject":
		return MsgRejection
	case "cancel":
		return MsgCancellation
	case "revise":
		return MsgRevision
	}
	return 0
}

func localEvent(t testing.TB, name string, n *Negotiation, now time.Time) Event {
	t.Helper()
	switch name {
	case "start":
		return Start{exampleRequest(t, now)}
	case "propose":
		if n.State() == StateRequestReceived {
			prop, conflicts := Meet(n.Pending(), exampleOffer(t, now), FromTime(now))
			if conflicts != nil {
				t.Fatalf("meet: %v", conflicts)
			}
			return Propose{prop}
		}
		return Propose{baseSSA(t, n, now)}
	case "accept":
		return Accept{}
	case "reject":
		return Reject{[]Reason{{Code: CodeDeclined, Text: "declined locally"}}}
	case "cancel":
		return Cancel{}
	case "revise":
		s := baseSSA(t, n, now)
		s.ID = "ssa-local-revision"
		return Revise{s}
	case "abandon":
		return Abandon{[]Reason{{Code: CodeUnspecified, Text: "the peer does not speak the protocol"}}}
	}
	return Tick{}
}

func expectLocal(role Role, name string, n *Negotiation, now time.Time) expectation {
	s := n.State()
	if name == "tick" || name == "tick after validity" {
		switch {
		case automatic[s]:
			e := expectation{next: s}
			e.answer(role, n, now)
			return e
		case (s == StateProposalSent || s == StateProposalReceived) && proposalExpired(n, now):
			return expectation{next: StateExpired, reasons: true}
		case (s == StateRequestSent || s == StateRequestReceived) && pendingExpired(n, now):
			return expectation{next: StateExpired, reasons: true}
		case s == StateWithdrawalSent && pendingExpired(n, now.Add(-MaxSkew)):
			return expectation{next: StateExpired, reasons: true}
		case (s == StateRevisionSent || s == StateRevisionReceived) && pendingExpired(n, now):
			return expectation{next: StateApproved, reasons: true}
		}
		return expectation{next: s}
	}
	if name == "abandon" {
		// No message: the one local event outside the transitions table.
		if s == StateRequestSent {
			return expectation{next: StateFailed, reasons: true}
		}
		return expectation{refused: true}
	}
	t := localMessage(name, s)
	ed, next, ok := lookup(role, s, t, true)
	if !ok || automatic[s] {
		return expectation{refused: true}
	}
	return expectation{next: next, sent: t, agreed: t == MsgConfirmation && next != StateWithdrawn, reasons: t == MsgRejection, edges: []edge{ed}}
}

// checkStep compares what Step did with the expectation.
func checkStep(n *Negotiation, before snapshot, ev Event, out Output, err error, want expectation) error {
	if want.refused {
		if !errors.Is(err, ErrUnexpected) {
			return fmt.Errorf("want ErrUnexpected, got %v", err)
		}
		if out.Send != nil || out.Record != nil || out.Agreement != nil || out.Reasons != nil || out.Duplicate {
			return fmt.Errorf("a refusal has output %+v", out)
		}
		return before.check(n)
	}
	if err != nil {
		return fmt.Errorf("want %s, got error %v", want.next, err)
	}
	if n.State() != want.next {
		return fmt.Errorf("state %s, want %s", n.State(), want.next)
	}
	var record []*Envelope
	if want.got != nil {
		record = append(record, want.got)
	}
	if want.sent != 0 {
		if out.Send == nil || out.Send.Header.Type != want.sent {
			return fmt.Errorf("sent %v, want a %s", out.Send, want.sent)
		}
		record = append(record, out.Send)
	} else if out.Send != nil {
		return fmt.Errorf("sent a %s, want nothing", out.Send.Header.Type)
	}
	if len(out.Record) != len(record) {
		return fmt.Errorf("recorded %d messages, want %d", len(out.Record), len(record))
	}
	for i, e := range record {
		if string(out.Record[i].Bytes()) != string(e.Bytes()) {
			return fmt.Errorf("record[%d] is not the %s", i, e.Header.Type)
		}
	}
	if !slices.Equal(n.Transcript(), append(slices.Clone(before.transcript), out.Record...)) {
		return errors.New("the transcript is not the old one followed by the record")
	}
	if s := out.Send; s != nil {
		if s.Sender != n.self.PeerID() || string(s.Header.Negotiation) != string(n.ID()) {
			return errors.New("the message sent is not ours or not of this negotiation")
		}
		var prev []byte
		if tr := n.Transcript(); len(tr) > 1 {
			prev = tr[len(tr)-2].Hash()
		}
		if string(s.Header.Prev) != string(prev) {
			return errors.New("the message sent does not name the previous message")
		}
		if _, err := Open(s.Bytes()); err != nil {
			return fmt.Errorf("the peer cannot open the message sent: %v", err)
		}
	}
	if want.agreed != (out.Agreement != nil) {
		return fmt.Errorf("agreement %v, want one: %v", out.Agreement != nil, want.agreed)
	}
	if out.Agreement != nil {
		if out.Agreement != n.Agreement() {
			return errors.New("the output's agreement is not the negotiation's")
		}
		if _, err := VerifySSA(out.Agreement); err != nil {
			return fmt.Errorf("agreement: %v", err)
		}
		if want := map[State]Status{StateApproved: StatusApproval, StateAnnulled: StatusAnnulment}[n.State()]; out.Agreement.Status != want {
			return fmt.Errorf("agreement status %s in state %s", out.Agreement.Status, n.State())
		}
	}
	if want.reasons != (out.Reasons != nil) {
		return fmt.Errorf("reasons %v, want some: %v", out.Reasons, want.reasons)
	}
	if r, ok := ev.(Reject); ok && !slices.Equal(out.Reasons, r.Reasons) {
		return fmt.Errorf("reasons %v, want the rejection's %v", out.Reasons, r.Reasons)
	}
	if r, ok := ev.(Abandon); ok && !slices.Equal(out.Reasons, r.Reasons) {
		return fmt.Errorf("reasons %v, want the abandonment's %v", out.Reasons, r.Reasons)
	}
	if want.got != nil && want.got.Rejection != nil && !slices.Equal(out.Reasons, want.got.Rejection.Reasons) {
		return fmt.Errorf("reasons %v, want the received rejection's", out.Reasons)
	}
	if out.Duplicate {
		return errors.New("a new message was taken for a duplicate")
	}
	return nil
}

func TestStepTable(t *testing.T) {
	taken := map[edge]map[Role]bool{}
	reached := map[Role]map[State]bool{RoleRequester: {}, RoleProvider: {}}
	for _, pl := range placements() {
		t.Run(fmt.Sprintf("%s/%s/%s", pl.role, pl.state, pl.name), func(t *testing.T) {
			n, _, _ := pl.build(t)
			if n.State() != pl.state || n.Role() != pl.role {
				t.Fatalf("placed in %s %s, want %s %s", n.Role(), n.State(), pl.role, pl.state)
			}
			reached[pl.role][pl.state] = true
			cell := func(name string, run func(n *Negotiation, peer *Identity, now time.Time) (Event, Output, expectation, error)) {
				t.Run(name, func(t *testing.T) {
					n, peer, now := pl.build(t)
					before := snap(n)
					ev, out, want, err := run(n, peer, now)
					if e := checkStep(n, before, ev, out, err, want); e != nil {
						t.Fatalf("%s %s, %s: %v", pl.role, pl.state, name, e)
					}
					for _, ed := range want.edges {
						if taken[ed] == nil {
							taken[ed] = map[Role]bool{}
						}
						taken[ed][pl.role] = true
					}
				})
			}
			for typ := MsgType(1); int(typ) <= len(msgNames); typ++ {
				cell("receive "+typ.String(), func(n *Negotiation, peer *Identity, now time.Time) (Event, Output, expectation, error) {
					env := peerMessage(t, n, peer, typ, now)
					want := expectReceive(pl.role, n, env, now)
					ev := Receive{env}
					out, err := n.Step(now, ev)
					return ev, out, want, err
				})
			}
			for _, name := range localEvents {
				cell(name, func(n *Negotiation, _ *Identity, now time.Time) (Event, Output, expectation, error) {
					if name == "tick after validity" {
						now = now.Add(2 * time.Hour)
					}
					ev := localEvent(t, name, n, now)
					want := expectLocal(pl.role, name, n, now)
					out, err := n.Step(now, ev)
					return ev, out, want, err
				})
			}
		})
	}

	t.Run("every state is placed or unreachable", func(t *testing.T) {
		for _, role := range []Role{RoleRequester, RoleProvider} {
			for s := StateNew; int(s) < len(stateNames); s++ {
				if reached[role][s] {
					continue
				}
				if !slices.Contains(unreachable[role], s) {
					t.Errorf("%s %s: no placement and not declared unreachable", role, s)
					continue
				}
				for ed, next := range transitions {
					if next == s && (ed.role == 0 || ed.role == role) {
						t.Errorf("%s %s is declared unreachable but %v leads to it", role, s, ed)
					}
				}
			}
		}
	})
	t.Run("every edge of the table is taken", func(t *testing.T) {
		for ed := range transitions {
			roles := []Role{ed.role}
			if ed.role == 0 {
				roles = []Role{RoleRequester, RoleProvider}
			}
			for _, role := range roles {
				if !taken[ed][role] {
					t.Errorf("%s: the edge %s a %s in %s is never taken", role, direction(ed.out), ed.typ, ed.state)
				}
			}
		}
	})
}

func direction(out bool) string {
	if out {
		return "sending"
	}
	return "receiving"
}
