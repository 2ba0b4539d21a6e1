package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"

	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// This file holds what an operator asks of the negotiation point (through the control API,
// the CLI or the demo): the Agent methods, and the negotiator's side of each.

// Request starts a negotiation as requester (Appendix I steps ①–②): the template becomes
// SSA-A, sent to the provider; the exchange goes on as far as automatic decisions take it.
func (a *Agent) Request(ctx context.Context, provider peer.AddrInfo, tmpl *protocol.SSA) (*storage.Negotiation, error) {
	return a.neg.request(ctx, provider, tmpl)
}

// Negotiation returns the stored record of the negotiation of an SSA (any version's ID).
func (a *Agent) Negotiation(ssaID string) (*storage.Negotiation, error) {
	return a.neg.negotiation(ssaID)
}

// Decision is an operator's answer to something held for them.
type Decision int

// Decisions.
const (
	Approve Decision = iota
	Decline
)

// Decide applies an operator's decision to a held request, proposal or revision and sends
// the answer.
func (a *Agent) Decide(ctx context.Context, ssaID string, d Decision, why string) (*storage.Negotiation, error) {
	return a.neg.act(ctx, ssaID, func(s *session) (protocol.Event, error) { return a.neg.decision(s, ssaID, d, why) })
}

// Cancel cancels an approved SSA (clause 10.2.3), also while a revision of it is pending
// (the revision is dropped), or withdraws a request not yet agreed: unanswered, it is
// cancelled (the provider confirms, both end withdrawn); never acknowledged by the provider,
// it is abandoned here at once (failed, reason withdrawn: a provider that got it after all
// lets it expire); once the proposal is here, the proposal is rejected (reason withdrawn).
func (a *Agent) Cancel(ctx context.Context, ssaID string) (*storage.Negotiation, error) {
	return a.neg.act(ctx, ssaID, func(s *session) (protocol.Event, error) { return cancellation(s, ssaID) })
}

// cancellation is the event that cancels or withdraws the SSA of s, or why there is none.
func cancellation(s *session, ssaID string) (protocol.Event, error) {
	switch st := s.machine.State(); st {
	case protocol.StateRequestSent:
		if !s.rec.Delivered {
			return protocol.Abandon{Reasons: []protocol.Reason{{Code: protocol.CodeWithdrawn,
				Text: "the requester withdrew its request before the provider acknowledged it"}}}, nil
		}
		return protocol.Cancel{}, nil
	case protocol.StateApproved, protocol.StateRevisionSent, protocol.StateRevisionReceived:
		return protocol.Cancel{}, nil
	case protocol.StateProposalReceived:
		return protocol.Reject{Reasons: []protocol.Reason{{Code: protocol.CodeWithdrawn, Text: "the requester withdrew its request"}}}, nil
	case protocol.StateAcceptanceSent:
		return nil, fmt.Errorf("%w: SSA %s is accepted and waits for the provider's confirmation: cancel it once approved", protocol.ErrUnexpected, ssaID)
	case protocol.StateCancellationSent, protocol.StateCancellationReceived, protocol.StateWithdrawalSent, protocol.StateWithdrawalReceived:
		return nil, fmt.Errorf("%w: SSA %s is already being cancelled (%s)", protocol.ErrUnexpected, ssaID, st)
	case protocol.StateRequestReceived:
		return nil, fmt.Errorf("%w: SSA %s is a request held for this agent's decision: decline it (ssanet ssa decline %s)", protocol.ErrUnexpected, ssaID, ssaID)
	case protocol.StateProposalSent:
		return nil, fmt.Errorf("%w: SSA %s is proposed and waits for the requester's answer: it ends if the proposal expires unanswered", protocol.ErrUnexpected, ssaID)
	}
	return nil, fmt.Errorf("%w: SSA %s is %s: there is nothing this side can cancel", protocol.ErrUnexpected, ssaID, s.machine.State())
}

// Revise proposes a new version of an approved SSA (clause 10.2.4) with the negotiable
// components of tmpl (information, policy, method, schedule, other), under a new ID,
// superseding the version in force; see reviseWith for how the terms are met.
func (a *Agent) Revise(ctx context.Context, ssaID string, tmpl *protocol.SSA) (*storage.Negotiation, error) {
	return a.neg.revise(ctx, ssaID, func(inForce *protocol.SSA) (*protocol.SSA, error) {
		w := inForce.Clone()
		protocol.SetTerms(w, tmpl)
		return w, nil
	})
}

// ReviseTemplate is Revise with terms an operator wrote: template (YAML, full or partial;
// empty for none) merged over the SSA in force, then each of sets ("path=value") applied
// (protocol.RevisionTerms). Terms that do not parse are ErrInvalid.
func (a *Agent) ReviseTemplate(ctx context.Context, ssaID string, template []byte, sets []string) (*storage.Negotiation, error) {
	return a.neg.revise(ctx, ssaID, func(inForce *protocol.SSA) (*protocol.SSA, error) {
		w, err := protocol.RevisionTerms(inForce, template, sets, a.neg.now())
		if err != nil {
			return nil, invalid(err)
		}
		return w, nil
	})
}

func (n *negotiator) request(ctx context.Context, provider peer.AddrInfo, tmpl *protocol.SSA) (*storage.Negotiation, error) {
	nid := make([]byte, 16)
	rand.Read(nid)
	m, err := protocol.NewRequester(n.self, provider.ID, nid)
	if err != nil {
		return nil, err
	}
	n.host.Peerstore().AddAddrs(provider.ID, provider.Addrs, peerstore.PermanentAddrTTL)
	ssa := tmpl.Clone()
	if ssa.ID == "" {
		ssa.ID = newSSAID()
	}
	n.signAs(&ssa.Participants.Requester, "requester", "ssa", ssa.ID)
	now := n.now()
	// The request's validity is this agent's: a template's expires (say, copied from an
	// SSA shown) is replaced.
	ssa.Expires = protocol.FromTime(now.Add(n.validity()))
	s := &session{machine: m, rec: &storage.Negotiation{ID: nid, Role: protocol.RoleRequester, Created: now, Updated: now}}
	s.atRest.Store(true) // until the request is committed: a refused one leaves nothing behind
	// In the cache before the first commit, so that the resend loop, which may see the
	// negotiation as soon as it is committed, uses this session and not a second one.
	n.sessions.add(s)
	defer n.release(s)
	s.mu.Lock()
	env, err := n.step(s, false, protocol.Start{SSA: ssa})
	s.mu.Unlock()
	if errors.Is(err, storage.ErrSSAInUse) {
		return nil, fmt.Errorf("the template's id %q already names an SSA of this agent (ssanet ssa show %s): leave id out of the template and a new one is made (%w)", ssa.ID, ssa.ID, err)
	}
	if err != nil {
		return nil, err
	}
	if err := n.deliver(ctx, s, provider.ID, env); err != nil {
		n.log.Warn("request not delivered yet; it will be sent again", "peer", provider.ID, "ssa", ssa.ID, "err", err)
		n.noteFailure(nid, err)
	}
	// The session's record is what the store holds: each step was committed, or rolled back.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken != nil {
		return nil, s.broken
	}
	rec := *s.rec
	rec.ID, rec.Reasons = slices.Clone(rec.ID), slices.Clone(rec.Reasons)
	return &rec, nil
}

func newSSAID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return "ssa-" + hex.EncodeToString(b)
}

func (n *negotiator) negotiation(ssaID string) (*storage.Negotiation, error) {
	rec, err := n.store.NegotiationBySSA(ssaID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%w %q (see ssanet ssa list)", ErrUnknownSSA, ssaID)
	}
	return rec, err
}

// decision is the event of an operator's decision d in s, the negotiation of ssaID.
func (n *negotiator) decision(s *session, ssaID string, d Decision, why string) (protocol.Event, error) {
	if !s.machine.State().AwaitsDecision() {
		return nil, fmt.Errorf("%w %s: it is %s", ErrNotDecidable, ssaID, s.machine.State())
	}
	if d == Decline {
		if why == "" {
			why = "declined by the operator"
		}
		return protocol.Reject{Reasons: []protocol.Reason{{Code: protocol.CodeDeclined, Text: why}}}, nil
	}
	if s.machine.State() == protocol.StateRevisionReceived && s.machine.Role() == protocol.RoleProvider {
		// An approved revision is met against the offer as it is now, as a request is.
		if o := n.offer(s.rec.OfferID); o != nil {
			if reasons := protocol.MeetRevision(s.machine.Pending(), o, protocol.FromTime(n.now())); len(reasons) > 0 {
				return protocol.Reject{Reasons: reasons}, nil
			}
		}
	}
	if s.machine.State() != protocol.StateRequestReceived {
		// An operator's approval does not make a method this agent cannot honour honourable.
		if reasons := n.cfg.Methods.unsupported(s.machine.Pending().Method, s.machine.Role()); reasons != nil {
			return protocol.Reject{Reasons: reasons}, nil
		}
		return protocol.Accept{}, nil
	}
	o := n.offer(s.rec.OfferID)
	if o == nil {
		return nil, fmt.Errorf("the offer %q this request matched was removed; decline it", s.rec.OfferID)
	}
	prop, conflicts := n.meet(s.machine.Pending(), o)
	if conflicts != nil {
		return protocol.Reject{Reasons: conflicts}, nil
	}
	return n.propose(s, prop), nil
}

// act steps the negotiation of ssaID with the event ev builds, persists, and delivers.
func (n *negotiator) act(ctx context.Context, ssaID string, ev func(*session) (protocol.Event, error)) (*storage.Negotiation, error) {
	rec, err := n.negotiation(ssaID)
	if err != nil {
		return nil, err
	}
	s, err := n.acquire(rec.ID, "")
	if err != nil {
		return nil, err
	}
	defer n.release(s)
	s.mu.Lock()
	p := s.machine.Peer()
	e, err := ev(s)
	var env *protocol.Envelope
	if err == nil {
		s.rec.Note = ""
		env, err = n.step(s, false, e)
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if env != nil {
		if err := n.deliver(ctx, s, p, env); err != nil {
			n.log.Warn("message not delivered yet; it will be sent again", "ssa", ssaID, "err", err)
			n.noteFailure(rec.ID, err)
		}
	}
	return n.store.Negotiation(rec.ID)
}
