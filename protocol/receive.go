package protocol

import (
	"bytes"
	"fmt"
	"time"
)

// Messages from the peer: each is checked (origin, chain, transition, terms) before anything
// changes, and answered at once where the protocol leaves no choice.

// receive checks a message from the peer and applies it, answering at once where the
// protocol leaves no choice (a confirmation of an acceptance or a cancellation).
func (n *Negotiation) receive(now time.Time, env *Envelope) (Output, error) {
	if i, seen := n.byID[string(env.Header.ID)]; seen {
		if !bytes.Equal(n.transcript[i].Bytes(), env.Bytes()) {
			return Output{}, fmt.Errorf("%w: message ID %x reused for another message", ErrBrokenChain, env.Header.ID)
		}
		out := Output{Duplicate: true}
		if i+1 < len(n.transcript) && n.transcript[i+1].Sender == n.self.id {
			out.Send = n.transcript[i+1]
		}
		return out, nil
	}
	if t := time.UnixMilli(env.Header.Time); t.Sub(now) > MaxSkew {
		return Output{}, fmt.Errorf("%w: %s from %s is dated %s, now is %s", ErrClockSkew, env.Header.Type, env.Sender, t.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	next, v, c, err := n.incoming(env)
	if err != nil {
		return Output{}, err
	}
	if c == oursPrevails {
		return Output{Superseded: true}, nil
	}
	i := n.follows(c)
	if i >= 0 && env.Header.Time < n.transcript[i].Header.Time-MaxSkew.Milliseconds() {
		prev := n.transcript[i]
		return Output{}, fmt.Errorf("%w: %s from %s is dated %s, the %s it follows %s", ErrClockSkew, env.Header.Type, env.Sender,
			time.UnixMilli(env.Header.Time).UTC().Format(time.RFC3339), prev.Header.Type, time.UnixMilli(prev.Header.Time).UTC().Format(time.RFC3339))
	}
	if counted := i + 1 - n.gaveWay; counted+room(env.Header.Type) > MaxMessages {
		return Output{}, fmt.Errorf("%w: no room for a %s after %d messages", ErrTooManyMessages, env.Header.Type, counted)
	}
	var out Output
	n.take(v)
	n.finish(&out, env, next)
	out.Record = []*Envelope{env}
	answer, err := n.answer(now, env)
	if err != nil {
		return Output{}, err
	}
	if answer.Send == nil {
		return out, nil
	}
	out.Record = append(out.Record, answer.Record...)
	out.Send = answer.Send
	out.Agreement = answer.Agreement
	out.Reasons = answer.Reasons
	return out, nil
}

// answer sends the answer the protocol requires at once to env, the message that brought the
// negotiation into its state: a confirmation of an acceptance (or a rejection if the proposal
// expired first) or of a cancellation. Other states need none.
func (n *Negotiation) answer(now time.Time, env *Envelope) (Output, error) {
	switch n.state {
	case StateAcceptanceReceived:
		if n.expiredProposal(now) {
			return n.send(now, MsgRejection, &Rejection{SSAID: env.SSA.ID, Reasons: []Reason{{
				Code: CodeProposalExpired, Component: "expires",
				Text: "the proposal expired at " + n.proposal().Expires.String() + " before it was accepted"}}})
		}
		return n.send(now, MsgConfirmation, env.SSA)
	case StateCancellationReceived, StateWithdrawalReceived:
		return n.send(now, MsgConfirmation, env.SSA)
	}
	return Output{}, nil
}

// proposal is the provider's last proposal.
func (n *Negotiation) proposal() *SSA {
	for i := len(n.transcript) - 1; i >= 0; i-- {
		if n.transcript[i].Header.Type == MsgProposal {
			return n.transcript[i].SSA
		}
	}
	return nil
}

func (n *Negotiation) expiredProposal(now time.Time) bool {
	exp := n.proposal().Expires
	return exp != 0 && !now.Before(exp.Std())
}

// incoming checks a message from the peer and returns the state it leads to, and the view
// of the negotiation it is to be applied on (take). A message that crossed one of ours (see
// crossing) is settled there: if ours prevails, the message changes nothing; if theirs does,
// it is taken as if ours had not been sent. The answer to our revision that expired
// unanswered (dropped) is taken as if the revision were still pending, if the peer made it
// before the revision's validity limit.
func (n *Negotiation) incoming(env *Envelope) (next State, v view, c crossed, err error) {
	v = n.view()
	switch c = n.crossing(env); c {
	case oursPrevails:
		return 0, v, c, n.checkOrigin(env)
	case theirsPrevails:
		v = n.undo
	}
	if t := env.Header.Type; v.dropped != nil && v.state == StateApproved && (t == MsgConfirmation || t == MsgRejection) {
		if exp := v.dropped.SSA.Expires; env.Header.Time >= exp.Std().UnixMilli() {
			return 0, v, c, fmt.Errorf("%w: %w: the %s was made at %s, the revision it answers was valid until %s", ErrUnexpected, ErrRevisionExpired,
				t, time.UnixMilli(env.Header.Time).UTC().Format(time.RFC3339), exp)
		}
		v.state, v.current, v.dropped = StateRevisionSent, v.dropped, nil
	}
	var prev []byte
	if i := n.follows(c); i >= 0 {
		prev = n.transcript[i].Hash()
	}
	next, err = n.checkIncoming(env, v, prev)
	return next, v, c, err
}

// follows is the position in the transcript of the message a message of the peer follows:
// the last one, or the one before ours when ours gives way to it; -1 for the first message.
func (n *Negotiation) follows(c crossed) int {
	if c == theirsPrevails {
		return len(n.transcript) - 2
	}
	return len(n.transcript) - 1
}

// crossed is how a message of the peer meets one of ours.
type crossed int

const (
	notCrossed crossed = iota
	oursPrevails
	theirsPrevails
)

// crossing tells whether env, a message of the peer, crossed one of ours on the network:
// both name the same previous message, so neither side saw the other's before sending its
// own. Without a rule both would refuse what they receive and send theirs again forever.
// The rule (prevails), the same on both sides, is in prevails. The side whose message gives
// way takes the other's in its place (its own stays in its transcript, answered by nothing);
// the side whose message prevails acknowledges the other's, records nothing, and waits for
// the answer to its own.
func (n *Negotiation) crossing(env *Envelope) crossed {
	theirs := env.Header.Type
	if len(env.Header.Prev) == 0 {
		return notCrossed
	}
	for i := len(n.transcript) - 1; i >= 0; i-- {
		own := n.transcript[i]
		if own.Sender != n.self.id || !bytes.Equal(own.Header.Prev, env.Header.Prev) {
			continue
		}
		switch prevails(own.Header.Type, theirs, n.role) {
		case oursPrevails:
			return oursPrevails
		case theirsPrevails:
			if i == len(n.transcript)-1 { // ours is still unanswered: theirs takes its place
				return theirsPrevails
			}
		}
		return notCrossed
	}
	return notCrossed
}

// prevails says which of two messages that crossed prevails, ours (sent by role) or theirs:
//   - a cancellation prevails over a revision (ending the SSA is what one party wants either
//     way); between two cancellations or two revisions, the provider's prevails;
//   - an answer (a confirmation or a rejection) prevails over the cancellation or revision
//     that crossed it: it settled what it answered (a revision, or a request), and the side
//     whose cancellation gave way finds the SSA in force and may cancel it again;
//   - a withdrawal (the requester's cancellation of its request) prevails over the proposal
//     that crossed it: nothing was agreed yet.
//
// Any other pair did not cross: the message is checked as usual (and refused).
func prevails(ours, theirs MsgType, role Role) crossed {
	ending := func(t MsgType) bool { return t == MsgCancellation || t == MsgRevision }
	answer := func(t MsgType) bool { return t == MsgConfirmation || t == MsgRejection }
	switch {
	case ending(ours) && ending(theirs):
		if ours == theirs {
			if role == RoleProvider {
				return oursPrevails
			}
			return theirsPrevails
		}
		if ours == MsgCancellation {
			return oursPrevails
		}
		return theirsPrevails
	case answer(ours) && ending(theirs), ours == MsgCancellation && theirs == MsgProposal:
		return oursPrevails
	case ending(ours) && answer(theirs), ours == MsgProposal && theirs == MsgCancellation:
		return theirsPrevails
	}
	return notCrossed
}

// checkOrigin checks that a message from the peer belongs to this negotiation.
func (n *Negotiation) checkOrigin(env *Envelope) error {
	if n.peer != "" && env.Sender != n.peer {
		return fmt.Errorf("%w: from %s, negotiating with %s", ErrWrongSender, env.Sender, n.peer)
	}
	if env.Sender == n.self.id {
		return fmt.Errorf("%w: message signed by this agent itself", ErrWrongSender)
	}
	if n.id != nil && !bytes.Equal(env.Header.Negotiation, n.id) {
		return fmt.Errorf("%w: %x, this is %x", ErrWrongNegotiation, env.Header.Negotiation, n.id)
	}
	return nil
}

// checkIncoming checks that a message from the peer belongs here, follows prev and carries
// the terms its type requires in state, before any state changes; it returns the state the
// message leads to.
func (n *Negotiation) checkIncoming(env *Envelope, v view, prev []byte) (State, error) {
	if err := n.checkOrigin(env); err != nil {
		return 0, err
	}
	if !bytes.Equal(env.Header.Prev, prev) {
		return 0, fmt.Errorf("%w: %s names previous message %x, last is %x", ErrBrokenChain, env.Header.Type, env.Header.Prev, prev)
	}
	next, ok := n.nextFrom(v.state, env.Header.Type, false)
	if !ok || (env.Header.Type == MsgAcceptance && n.proposal() == nil) { // a request that expired has no proposal
		return 0, n.refuse("", env)
	}
	return next, n.checkTerms(env, v.current)
}

// checkTerms checks that a message from the peer carries the terms its type requires;
// current is the message it answers or follows.
func (n *Negotiation) checkTerms(env *Envelope, current *Envelope) error {
	switch env.Header.Type {
	case MsgRequest:
		return n.checkRequest(env)
	case MsgProposal:
		return n.checkProposal(env, current)
	case MsgAcceptance:
		want := *n.proposal() // a shallow copy: only its own scalar fields change
		want.Status, want.Date, want.Expires = StatusApproval, env.SSA.Date, 0
		return sameTerms(&want, env)
	case MsgConfirmation:
		if !bytes.Equal(env.Payload(), current.Payload()) {
			return fmt.Errorf("%w: the confirmation's SSA differs from the %s it confirms", ErrTermsChanged, current.Header.Type)
		}
	case MsgCancellation:
		return sameTerms(n.cancellation(), env)
	case MsgRevision:
		return n.checkRevision(env.SSA)
	case MsgRejection:
		if current == nil || env.Rejection.SSAID != current.SSA.ID {
			return fmt.Errorf("%w: the rejection names SSA %q", ErrTermsChanged, env.Rejection.SSAID)
		}
	}
	return nil
}

// checkRequest checks that a request carries a proposal-status SSA with an ID, made by its
// sender, for this agent or for no provider in particular.
func (n *Negotiation) checkRequest(env *Envelope) error {
	s := env.SSA
	if s.Status != StatusProposal || s.ID == "" {
		return fmt.Errorf("%w: a request carries a proposal-status SSA with an ID", ErrTermsChanged)
	}
	if s.Participants.Requester.PeerID != n.senderString(env) {
		return fmt.Errorf("%w: the request's requester is %q, the sender %s", ErrWrongSender, s.Participants.Requester.PeerID, env.Sender)
	}
	if p := s.Participants.Provider.PeerID; p != "" && p != n.self.str {
		return fmt.Errorf("%w: the request names provider %s, this agent is %s", ErrWrongSender, p, n.self.id)
	}
	return nil
}

// checkProposal checks that a proposal keeps the request's ID and requester and names its
// sender as provider.
func (n *Negotiation) checkProposal(env *Envelope, current *Envelope) error {
	s, req := env.SSA, current.SSA
	if s.Status != StatusProposal || s.ID != req.ID || s.Participants.Requester != req.Participants.Requester ||
		s.Participants.Provider.PeerID != n.senderString(env) {
		return fmt.Errorf("%w: a proposal keeps the request's ID and requester and names its sender as provider", ErrTermsChanged)
	}
	return nil
}

// checkRevision checks that a revision s supersedes the SSA in force with the next version, a
// new ID and the same participants.
func (n *Negotiation) checkRevision(s *SSA) error {
	a := n.agreed
	if s.Status != StatusApproval || s.ID == "" || s.ID == a.ID || s.Supersedes != a.ID || s.Version != a.Version+1 || s.Participants != a.Participants {
		return fmt.Errorf("%w: a revision supersedes the SSA in force with the next version, a new ID and the same participants", ErrTermsChanged)
	}
	return nil
}

// cancellation is the SSA a cancellation carries: the SSA in force or, before there is one,
// the request (a withdrawal), in annulment status.
func (n *Negotiation) cancellation() *SSA {
	s := n.agreed
	if s == nil {
		s = n.transcript[0].SSA
	}
	c := s.Clone()
	c.Status, c.Signatures = StatusAnnulment, nil
	return c
}

// sameTerms checks that env carries the SSA want, comparing signing bytes: Open has checked
// that a payload is the canonical encoding of the SSA it carries.
func sameTerms(want *SSA, env *Envelope) error {
	a, err := want.SigningBytes()
	if err != nil {
		return err
	}
	if !bytes.Equal(a, env.Payload()) {
		return fmt.Errorf("%w: the SSA is not the one negotiated", ErrTermsChanged)
	}
	return nil
}
