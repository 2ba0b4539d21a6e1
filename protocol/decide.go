package protocol

import (
	"fmt"
	"time"
)

// The local events of Step, one method each: the decisions of this agent and the passing of
// time. Each checks that the state allows it, then sends its message through send.

// tick expires an unanswered request, proposal or revision, and sends an answer that Restore
// found owed. Output.Reasons says what expired.
func (n *Negotiation) tick(now time.Time) (Output, error) {
	if l, ok := lapses[n.state]; ok {
		limit := now
		if n.state == StateWithdrawalSent {
			// The provider, whose request expired before the withdrawal reached it, refuses
			// it: both end expired. MaxSkew leaves time for a confirmation the provider made
			// before its own clock said the request expired.
			limit = now.Add(-MaxSkew)
		}
		if n.expired(limit) {
			return n.expire(l), nil
		}
		return Output{}, nil
	}
	switch n.state {
	case StateAcceptanceReceived, StateCancellationReceived, StateWithdrawalReceived:
		// Only Restore leaves a negotiation here, when the transcript was persisted
		// between a received message and its automatic answer: send the answer now.
		return n.answer(now, n.current)
	}
	return Output{}, nil
}

// lapse is what the passing of the pending SSA's validity limit ends in a state.
type lapse struct {
	code Code
	err  error
	what string
}

// lapses are the states that wait on an SSA with a validity limit.
var lapses = map[State]lapse{
	StateRequestSent:      {CodeRequestExpired, ErrRequestExpired, "request"},
	StateRequestReceived:  {CodeRequestExpired, ErrRequestExpired, "request"},
	StateWithdrawalSent:   {CodeRequestExpired, ErrRequestExpired, "request"},
	StateProposalSent:     {CodeProposalExpired, ErrProposalExpired, "proposal"},
	StateProposalReceived: {CodeProposalExpired, ErrProposalExpired, "proposal"},
	StateRevisionSent:     {CodeRevisionExpired, ErrRevisionExpired, "revision"},
	StateRevisionReceived: {CodeRevisionExpired, ErrRevisionExpired, "revision"},
}

// expire ends what the validity limit of the pending SSA ended: the negotiation, or the
// revision (dropped: the SSA in force stays; our own one's answer, made in time, still counts).
func (n *Negotiation) expire(l lapse) Output {
	reasons := []Reason{{Code: l.code, Component: "expires", Text: "the " + l.what + " was valid until " + n.current.SSA.Expires.String() + " and was not answered"}}
	switch n.state {
	case StateRevisionSent:
		n.dropped, n.current, n.state = n.current, nil, StateApproved
	case StateRevisionReceived:
		n.current, n.state = nil, StateApproved
	default:
		n.state = StateExpired
	}
	return Output{Reasons: reasons}
}

// late refuses a decision on what awaits one once its validity limit has passed, and lets it
// expire: it returns the error, or nil if there is still time.
func (n *Negotiation) late(now time.Time) error {
	l, ok := lapses[n.state]
	if !ok || !n.state.AwaitsDecision() || !n.expired(now) {
		return nil
	}
	exp := n.current.SSA.Expires
	n.expire(l)
	return fmt.Errorf("%w: it was valid until %s", l.err, exp)
}

// start sends the requester's request for ssa.
func (n *Negotiation) start(now time.Time, ssa *SSA) (Output, error) {
	if n.role != RoleRequester || n.state != StateNew {
		return Output{}, n.refuse("start", nil)
	}
	s := ssa.Clone()
	s.Status, s.Signatures = StatusProposal, nil
	s.Participants.Requester.PeerID = n.self.str
	s.Participants.Provider.PeerID = n.peerString()
	if err := CheckSSAID(s.ID); err != nil {
		return Output{}, fmt.Errorf("%w: a request needs an SSA ID: %w", ErrInvalidSSA, err)
	}
	return n.send(now, MsgRequest, s)
}

// propose sends the provider's proposal ssa in answer to the request.
func (n *Negotiation) propose(now time.Time, ssa *SSA) (Output, error) {
	if n.state != StateRequestReceived {
		return Output{}, n.refuse("propose", nil)
	}
	if err := n.late(now); err != nil {
		return Output{}, err
	}
	s := ssa.Clone()
	s.Status, s.Signatures = StatusProposal, nil
	req := n.current.SSA
	if s.ID != req.ID || s.Participants.Requester != req.Participants.Requester {
		return Output{}, fmt.Errorf("%w: a proposal keeps the request's ID and requester", ErrTermsChanged)
	}
	s.Participants.Provider.PeerID = n.self.str
	if s.Expires != 0 && s.Expires.Std().Before(now) {
		return Output{}, fmt.Errorf("%w: the proposal's validity limit is already past", ErrProposalExpired)
	}
	return n.send(now, MsgProposal, s)
}

// accept accepts the proposal while it is valid, or confirms the peer's revision.
func (n *Negotiation) accept(now time.Time) (Output, error) {
	if n.state == StateProposalReceived || n.state == StateRevisionReceived {
		if err := n.late(now); err != nil {
			return Output{}, err
		}
	}
	switch n.state {
	case StateProposalReceived:
		// An approved SSA carries no validity limit: the proposal's ends with the acceptance.
		s := *n.current.SSA // a shallow copy: only its own scalar fields change
		s.Status, s.Date, s.Expires = StatusApproval, FromTime(now), 0
		return n.send(now, MsgAcceptance, &s)
	case StateRevisionReceived:
		return n.send(now, MsgConfirmation, n.current.SSA)
	}
	return Output{}, n.refuse("accept", nil)
}

// reject rejects what awaits a decision: the request, the proposal or a revision.
func (n *Negotiation) reject(now time.Time, reasons []Reason) (Output, error) {
	if !n.state.AwaitsDecision() {
		return Output{}, n.refuse("reject", nil)
	}
	if n.state != StateProposalReceived { // rejecting an expired proposal still tells the provider
		if err := n.late(now); err != nil {
			return Output{}, err
		}
	}
	return n.send(now, MsgRejection, &Rejection{SSAID: n.current.SSA.ID, Reasons: reasons})
}

// cancel sends the cancellation of the SSA in force, also while a revision is pending, or
// the withdrawal of the unanswered request.
func (n *Negotiation) cancel(now time.Time) (Output, error) {
	switch n.state {
	case StateApproved, StateRevisionSent, StateRevisionReceived, StateRequestSent:
		return n.send(now, MsgCancellation, n.cancellation())
	}
	return Output{}, n.refuse("cancel", nil)
}

// revise sends ssa, under a new ID, as the next version of the SSA in force.
func (n *Negotiation) revise(now time.Time, ssa *SSA) (Output, error) {
	if n.state != StateApproved {
		return Output{}, n.refuse("revise", nil)
	}
	s := ssa.Clone()
	if s.ID == n.agreed.ID {
		return Output{}, fmt.Errorf("%w: a revision needs a new SSA ID", ErrInvalidSSA)
	}
	if err := CheckSSAID(s.ID); err != nil {
		return Output{}, fmt.Errorf("%w: a revision needs a new SSA ID: %w", ErrInvalidSSA, err)
	}
	if s.Expires != 0 && !now.Before(s.Expires.Std()) {
		return Output{}, fmt.Errorf("%w: the revision's validity limit %s is already past", ErrRevisionExpired, s.Expires)
	}
	s.Status, s.Signatures, s.Date = StatusApproval, nil, FromTime(now)
	s.Version, s.Supersedes = n.agreed.Version+1, n.agreed.ID
	s.Participants = n.agreed.Participants
	return n.send(now, MsgRevision, s)
}

// expired reports whether the pending SSA's validity limit has passed at now (a withdrawal
// carries the request's).
func (n *Negotiation) expired(now time.Time) bool {
	exp := n.current.SSA.Expires
	return exp != 0 && !now.Before(exp.Std())
}

// abandon ends an unanswered request that the peer can never receive, without a message.
func (n *Negotiation) abandon(reasons []Reason) (Output, error) {
	if n.state != StateRequestSent {
		return Output{}, n.refuse("abandon", nil)
	}
	if len(reasons) == 0 {
		reasons = []Reason{{Code: CodeUnspecified, Text: "the request could never reach the peer"}}
	}
	n.state = StateFailed
	return Output{Reasons: reasons}, nil
}
