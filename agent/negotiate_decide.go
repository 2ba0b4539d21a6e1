package agent

import (
	"errors"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
)

// decide returns the automatic decision the agent takes in the session's state, or nil when
// it waits (for the peer, or for an operator).
func (n *negotiator) decide(s *session) protocol.Event {
	switch s.machine.State() {
	case protocol.StateRequestReceived:
		return n.answerRequest(s)
	case protocol.StateProposalReceived:
		if !n.cfg.AutoAccept {
			s.rec.Note = "proposal held for an operator: ssanet ssa approve|decline " + s.machine.Pending().ID
			return nil
		}
		if reasons := n.unenforceable(s.machine.Pending()); reasons != nil {
			return protocol.Reject{Reasons: reasons}
		}
		if reasons := n.cfg.Methods.unsupported(s.machine.Pending().Method, protocol.RoleRequester); reasons != nil {
			return protocol.Reject{Reasons: reasons}
		}
		return acceptIfSatisfies(s.machine.Pending(), request(s))
	case protocol.StateRevisionReceived:
		return n.answerRevision(s) // negotiate_revise.go
	}
	return nil
}

// acceptIfSatisfies accepts proposal if it satisfies what this side required, and rejects it
// with the reasons why not otherwise.
func acceptIfSatisfies(proposal, required *protocol.SSA) protocol.Event {
	if reasons := protocol.Satisfies(proposal, required); len(reasons) > 0 {
		return protocol.Reject{Reasons: reasons}
	}
	return protocol.Accept{}
}

// request is the requester's own request SSA: the first message of the transcript.
func request(s *session) *protocol.SSA { return s.machine.Transcript()[0].SSA }

func (n *negotiator) offer(id string) *protocol.Offer {
	offers, err := n.cfg.Offers()
	if err != nil {
		n.log.Error("read offers", "err", err)
		return nil
	}
	for _, o := range offers {
		if o.ID == id {
			return o
		}
	}
	return nil
}

// answerRequest is Appendix I step ③: find the offer the request matches and answer with the
// meet, or a rejection naming each conflict; a manual offer holds the request.
func (n *negotiator) answerRequest(s *session) protocol.Event {
	req := s.machine.Pending()
	if s.unbound {
		return protocol.Reject{Reasons: []protocol.Reason{{Code: protocol.CodeSSAIDInUse, Component: "identifier",
			Requester: req.ID, Text: "this SSA ID already names the SSA of another negotiation with this provider: request again with a new ID (leave id out of the template and one is made)"}}}
	}
	offers, err := n.cfg.Offers()
	if err != nil {
		n.log.Error("read offers", "err", err)
		return nil
	}
	var best []protocol.Reason
	for _, o := range offers {
		if !o.Matches(req) {
			continue
		}
		s.rec.OfferID = o.ID
		if o.Manual() {
			s.rec.Note = "request held for an operator: ssanet ssa approve|decline " + req.ID
			return nil
		}
		prop, conflicts := n.meet(req, o)
		if conflicts == nil {
			return n.propose(s, prop)
		}
		if best == nil {
			best = conflicts
		}
	}
	if best == nil {
		best = []protocol.Reason{{Code: protocol.CodeNoOffer, Component: "information",
			Text: "this agent offers none of the requested information"}}
	}
	return protocol.Reject{Reasons: best}
}

// propose is the proposal of prop in s, or its rejection when the requester holds all the
// places admission gives it.
func (n *negotiator) propose(s *session, prop *protocol.SSA) protocol.Event {
	if r := n.admission.takePlace(string(s.rec.ID), s.machine.Peer().String()); r != nil {
		return *r
	}
	return protocol.Propose{SSA: prop}
}

// meet is the proposal from a request and an offer, with this agent's contact details and
// addresses (method.access). A proposal whose policy the enforcement point could not enforce,
// or whose method this agent cannot honour, is refused here, at negotiation time: fail
// closed.
func (n *negotiator) meet(req *protocol.SSA, o *protocol.Offer) (*protocol.SSA, []protocol.Reason) {
	withAddrs := *o
	withAddrs.Terms.Method.Access = n.cfg.Addrs()
	prop, conflicts := protocol.Meet(req, &withAddrs, protocol.FromTime(n.now()))
	if prop == nil {
		return nil, conflicts
	}
	if reasons := n.cfg.Methods.unsupported(prop.Method, protocol.RoleProvider); reasons != nil {
		return nil, reasons
	}
	n.cfg.Methods.complete(&prop.Method)
	if reasons := n.unenforceable(prop); reasons != nil {
		return nil, reasons
	}
	n.signAs(&prop.Participants.Provider, "provider", "ssa", prop.ID)
	return prop, nil
}

// unenforceable says why the enforcement point could not enforce s (a filter too costly for
// a sensor among them), as the reasons of a rejection; nil when it can.
func (n *negotiator) unenforceable(s *protocol.SSA) []protocol.Reason {
	err := n.cfg.Enforceable(s)
	if err == nil {
		return nil
	}
	var r *policy.Refusal
	if errors.As(err, &r) {
		return []protocol.Reason{r.ProtocolReason()}
	}
	return []protocol.Reason{{Code: protocol.CodePolicyUnenforceable, Component: "policy", Text: err.Error()}}
}
