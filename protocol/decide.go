package protocol

import (
	"fmt"
	"time"
)

// The local events of Step, one method each: the decisions of this agent and the passing of
// time. Each checks that the state allows it, then sends its message through send.

// tick expires an unanswered proposal, and sends an answer that Restore found owed.
func (n *Negotiation) tick(now time.Time) (Output, error) {
	switch {
	case (n.state == StateProposalSent || n.state == StateProposalReceived) && n.expired(now):
		n.state = StateExpired
	case n.state == StateAcceptanceReceived || n.state == StateCancellationReceived:
		// Only Restore leaves a negotiation here, when the transcript was persisted
		// between a received message and its automatic answer: send the answer now.
		return n.answer(now, n.current)
	}
	return Output{}, nil
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
	switch n.state {
	case StateProposalReceived:
		if n.expired(now) {
			n.state = StateExpired
			return Output{}, fmt.Errorf("%w: it was valid until %s", ErrProposalExpired, n.current.SSA.Expires)
		}
		s := *n.current.SSA // a shallow copy: only its own scalar fields change
		s.Status, s.Date = StatusApproval, FromTime(now)
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
	return n.send(now, MsgRejection, &Rejection{SSAID: n.current.SSA.ID, Reasons: reasons})
}

// cancel sends the cancellation of the SSA in force.
func (n *Negotiation) cancel(now time.Time) (Output, error) {
	if n.state != StateApproved {
		return Output{}, n.refuse("cancel", nil)
	}
	s := n.agreed.Clone()
	s.Status, s.Signatures = StatusAnnulment, nil
	return n.send(now, MsgCancellation, s)
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
	s.Status, s.Signatures, s.Date, s.Expires = StatusApproval, nil, FromTime(now), 0
	s.Version, s.Supersedes = n.agreed.Version+1, n.agreed.ID
	s.Participants = n.agreed.Participants
	return n.send(now, MsgRevision, s)
}

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
