package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// Revision as a flow of its own (clause 10.2.4). Whichever side revises, the revision is met
// against the provider's current offer by the rules of a request (protocol.Meet):
//
//   - a requester reads the provider's current offers (discovery's offers protocol) and sends
//     the meet of its terms with the first offer that matches them without conflict, as the
//     provider would have proposed for a request; if it cannot read them, or none fits, it
//     sends its terms as they are and the provider refuses what conflicts;
//   - a provider's own revision must satisfy the offer the SSA was agreed under, or it is not
//     sent (an error naming each component);
//   - a provider receiving a revision refuses it with a reason per conflicting component
//     (protocol.MeetRevision) when it does not fit that offer as it is now;
//   - a requester receiving a revision judges the components it changes against its current
//     template (requesterTemplate); the components left as agreed were accepted already.

// ErrNotRevisable means the SSA is not in force (approved), so it cannot be revised now.
var ErrNotRevisable = errors.New("agent: the SSA cannot be revised now")

// revise builds a revision of the SSA in force in the negotiation of ssaID with build (the
// terms the operator asked for, from the SSA in force), meets it against the provider's
// offer, and sends it.
func (n *negotiator) revise(ctx context.Context, ssaID string, build func(inForce *protocol.SSA) (*protocol.SSA, error)) (*storage.Negotiation, error) {
	rec, err := n.negotiation(ssaID)
	if err != nil {
		return nil, err
	}
	s, err := n.acquire(rec.ID, "")
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	state, role, p, inForce, offerID := s.machine.State(), s.machine.Role(), s.machine.Peer(), s.machine.Agreement(), s.rec.OfferID
	s.mu.Unlock()
	n.release(s)
	if state != protocol.StateApproved || inForce == nil {
		return nil, kindError{ErrNotRevisable, fmt.Errorf("SSA %s is %s: only an SSA in force (approved) can be revised", ssaID, state)}
	}
	w, err := build(inForce)
	if err != nil {
		return nil, err
	}
	if role == protocol.RoleRequester {
		n.meetCurrentOffer(ctx, p, inForce, w)
	} else {
		o := n.offer(offerID)
		if o == nil {
			return nil, invalid(fmt.Errorf("the offer %q SSA %s was agreed under is gone: a provider's revision must satisfy its offer; add the offer again (ssanet offer add)", offerID, inForce.ID))
		}
		if reasons := protocol.MeetRevision(w, o, protocol.FromTime(n.now())); len(reasons) > 0 {
			return nil, invalid(fmt.Errorf("the revision does not satisfy this agent's offer %s: %s", o.ID, reasonList(reasons)))
		}
	}
	if reasons := n.unenforceable(w); reasons != nil {
		return nil, invalid(fmt.Errorf("the revision could not be enforced here: %s", reasonList(reasons)))
	}
	return n.act(ctx, ssaID, func(s *session) (protocol.Event, error) {
		if a := s.machine.Agreement(); a == nil || a.ID != inForce.ID {
			return nil, kindError{ErrNotRevisable, fmt.Errorf("the SSA in force changed while the revision of %s was prepared (it is %s now): revise again", inForce.ID, s.machine.State())}
		}
		v := w.Clone()
		v.ID = newSSAID()
		v.Expires = protocol.FromTime(n.now().Add(n.validity())) // the revision's validity is this agent's
		return protocol.Revise{SSA: v}, nil
	})
}

// meetCurrentOffer turns a requester's terms w into the meet with the provider's current
// offer, as the provider would propose it for a request: stricter handling and masking where
// the offer requires them, the offered formats. The offers that inForce satisfies are tried
// first. If the offers cannot be read, or none fits, w goes as it is and the provider
// refuses it naming what conflicts.
func (n *negotiator) meetCurrentOffer(ctx context.Context, p peer.ID, inForce, w *protocol.SSA) {
	if n.cfg.FetchOffers == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.MessageTimeout)
	defer cancel()
	if n.cfg.FindAddrs != nil {
		n.cfg.FindAddrs(ctx, p)
	}
	offers, err := n.cfg.FetchOffers(ctx, p)
	if err != nil {
		n.log.Info("the provider's current offers could not be read: the revision is sent as written, for the provider to meet", "peer", p, "ssa", w.ID, "err", err)
		return
	}
	// The offer the SSA was agreed under is not named to the requester: an offer that the
	// SSA in force satisfies is likely it, so those come first.
	misfit := func(o *protocol.Offer) int { return min(len(protocol.Satisfies(inForce, &o.Terms)), 1) }
	slices.SortStableFunc(offers, func(a, b *protocol.Offer) int { return cmp.Compare(misfit(a), misfit(b)) })
	now := protocol.FromTime(n.now())
	for _, o := range offers {
		if !o.Matches(w) {
			continue
		}
		if met, conflicts := protocol.Meet(w, o, now); conflicts == nil {
			protocol.SetTerms(w, met)
			return
		}
	}
	n.log.Info("no current offer of the provider fits the revision: it is sent as written and the provider will refuse what conflicts", "peer", p, "ssa", w.ID)
}

// answerRevision is the automatic answer to a revision received, or nil when it waits for an
// operator (with a note saying so).
func (n *negotiator) answerRevision(s *session) protocol.Event {
	rev := s.machine.Pending()
	held := "revision held for an operator: ssanet ssa approve|decline " + rev.ID
	if s.machine.Role() == protocol.RoleProvider {
		o := n.offer(s.rec.OfferID)
		if o == nil {
			s.rec.Note = fmt.Sprintf("revision held for an operator: the offer %q the SSA was agreed under is gone, so it cannot be met: ssanet ssa approve|decline %s", s.rec.OfferID, rev.ID)
			return nil
		}
		if o.Manual() || !n.cfg.AutoAccept {
			s.rec.Note = held // met against the offer when the operator approves (decision)
			return nil
		}
		return n.judgeRevision(s, rev, protocol.MeetRevision(rev, o, protocol.FromTime(n.now())))
	}
	if !n.cfg.AutoAccept {
		s.rec.Note = held
		return nil
	}
	return n.judgeRevision(s, rev, protocol.RevisionSatisfies(rev, s.machine.Agreement(), n.requesterTemplate(s)))
}

// judgeRevision accepts rev, received in s, if nothing is against it (reasons), this agent's
// enforcement point can enforce it and this agent can honour its method; it rejects it with
// the reasons otherwise.
func (n *negotiator) judgeRevision(s *session, rev *protocol.SSA, reasons []protocol.Reason) protocol.Event {
	if len(reasons) == 0 {
		reasons = n.unenforceable(rev)
	}
	if len(reasons) == 0 {
		reasons = n.cfg.Methods.unsupported(rev.Method, s.machine.Role())
	}
	if len(reasons) > 0 {
		n.log.Info("revision refused", "ssa", rev.ID, "peer", s.machine.Peer(), "reasons", reasonList(reasons))
		return protocol.Reject{Reasons: reasons}
	}
	return protocol.Accept{}
}

// requesterTemplate is what the requester asks for now: its last revision that the provider
// confirmed, or else its request. It is read as a request (status proposal), so that the
// key IDs of the provider's masking rules are not held against it (see protocol.Satisfies).
func (n *negotiator) requesterTemplate(s *session) *protocol.SSA {
	tr := s.machine.Transcript()
	cur := tr[0].SSA
	self := n.host.ID()
	for i := 1; i+1 < len(tr); i++ {
		if tr[i].Sender == self && tr[i].Header.Type == protocol.MsgRevision &&
			tr[i+1].Sender != self && tr[i+1].Header.Type == protocol.MsgConfirmation {
			cur = tr[i].SSA
		}
	}
	t := cur.Clone()
	t.Status = protocol.StatusProposal
	return t
}

// reasonList is reasons on one line, for an error.
func reasonList(reasons []protocol.Reason) string {
	s := make([]string, len(reasons))
	for i, r := range reasons {
		s[i] = r.String()
	}
	return strings.Join(s, "; ")
}
