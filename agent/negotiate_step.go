package agent

import (
	"fmt"
	"time"

	"github.com/ssanet/ssanet/protocol"
)

// applied is what a run of events did to a session, to be committed.
type applied struct {
	records   [][]byte
	agreement *protocol.SSA
	send      *protocol.Envelope
	// replay is set when the event changed nothing (a duplicate, or a message superseded):
	// send is the original answer or an acknowledgement, and nothing is committed.
	replay bool
	// refused is the state machine's refusal of an event that still moved the negotiation
	// on (a decision on a proposal found expired): committed, then returned.
	refused error
}

// step applies events to a session in order, with the automatic decisions they lead to, and
// commits every message they record in one durable write, before anything is sent. It
// returns the last message to send. An answer written back on the peer's own stream
// (inbound) counts as delivered: if it is lost, the peer sends its message again and gets
// the same answer. A message this agent sends on its own stream is delivered when the peer
// acknowledges it, and sent again until then. The caller holds s.mu.
func (n *negotiator) step(s *session, inbound bool, events ...protocol.Event) (*protocol.Envelope, error) {
	if s.broken != nil {
		return nil, s.broken
	}
	now, before := n.now(), s.machine.State()
	a, err := n.apply(s, now, events)
	switch {
	case err != nil:
		return nil, err
	case a.replay:
		return a.send, nil
	case len(a.records) == 0 && s.machine.State() == before:
		n.setDelivered(s) // a tick that changed nothing: nothing to persist
		return nil, nil
	}
	if err := n.commit(s, inbound, now, a); err != nil {
		return nil, err
	}
	n.afterCommit(s, before, now, a.agreement)
	return a.send, a.refused
}

// apply is the decide part of step: it steps the state machine through events and the
// automatic decisions each state calls for, and gathers what to commit. It returns an error
// only when nothing is to be committed.
func (n *negotiator) apply(s *session, now time.Time, events []protocol.Event) (applied, error) {
	var a applied
	before := s.machine.State()
	for i := 0; i < len(events); i++ {
		was := s.machine.State()
		out, err := s.machine.Step(now, events[i])
		if err != nil {
			return a, n.refusedEvent(s, &a, before, err)
		}
		if out.Duplicate || out.Superseded {
			return applied{replay: true, send: out.Send}, nil
		}
		for _, e := range out.Record {
			a.records = append(a.records, e.Bytes())
		}
		if out.Agreement != nil {
			a.agreement = out.Agreement
			s.rec.Reasons = nil
		}
		if out.Reasons != nil {
			s.rec.Reasons = out.Reasons
		}
		if out.Send != nil {
			a.send = out.Send
		}
		if decision := n.decide(s); decision != nil {
			events = append(events, decision)
		} else if was == protocol.StateCancellationSent && s.machine.State() == protocol.StateApproved {
			// Our cancellation gave way to the peer's answer to a revision, which crossed it
			// (see protocol.Cancel): the operator's cancellation stands, of the SSA now in
			// force.
			n.log.Info("cancellation crossed the answer to a revision: cancelling the SSA now in force", "ssa", s.machine.Agreement().ID, "peer", s.rec.Peer)
			events = append(events, protocol.Cancel{})
		}
	}
	return a, nil
}

// refusedEvent handles the state machine's refusal err of an event, after the events that
// came before it did a: it returns err if there is nothing to commit, else nil, with the
// refusal kept for the caller or noted for the operator.
func (n *negotiator) refusedEvent(s *session, a *applied, before protocol.State, err error) error {
	switch {
	case len(a.records) == 0 && s.machine.State() == before:
		n.admission.track(s.rec) // gives back a place taken for a step that failed
		return err
	case len(a.records) == 0:
		a.refused = err
	default:
		// Keep what the earlier events did; the decision is left to an operator.
		n.log.Error("automatic decision failed", "ssa", s.rec.SSAID, "err", err)
		s.rec.Note = "automatic decision failed: " + err.Error()
	}
	return nil
}

// commit writes the record of s and what a recorded in one durable write or, if the store
// refuses it, rolls s back to what the store holds.
func (n *negotiator) commit(s *session, inbound bool, now time.Time, a applied) error {
	s.rec.State, s.rec.Peer, s.rec.Updated = s.machine.State(), s.machine.Peer().String(), now
	if id := n.ssaID(s); id != "" {
		s.rec.SSAID = id
	}
	if len(a.records) > 0 {
		// Our last message is the one we send now, or an answer written back on the peer's
		// stream, or the peer's message answers ours. A step that records nothing (a
		// proposal expiring) leaves ours as it was: an expired proposal the requester never
		// got is still sent, so that it learns of it.
		s.rec.Delivered = a.send == nil || inbound
	}
	if err := n.store.Commit(s.rec, a.records, a.agreement); err != nil {
		id := s.rec.ID
		n.rollback(s) // the state machine moved on but the store did not
		return fmt.Errorf("persist negotiation %x: %w", id, err)
	}
	n.setDelivered(s)
	return nil
}

// ssaID is the SSA ID the record of s is found by from now on, or "" to keep the one it has.
func (n *negotiator) ssaID(s *session) string {
	switch {
	case s.machine.Pending() != nil:
		return s.machine.Pending().ID
	case s.machine.Agreement() != nil:
		return s.machine.Agreement().ID
	case s.rec.SSAID == "" && len(s.machine.Transcript()) > 0 && !s.unbound:
		return s.machine.Transcript()[0].SSA.ID // a request rejected at once
	}
	return ""
}

// afterCommit tells others what a committed step of s changed, from state before.
func (n *negotiator) afterCommit(s *session, before protocol.State, now time.Time, agreement *protocol.SSA) {
	// Keep the peer's addresses where a restart finds them whenever this agent will have to
	// reach the peer by itself: to resend, to send a decision, to deliver and monitor.
	if agreement != nil || !s.rec.Delivered || s.machine.State().AwaitsDecision() {
		if err := n.cfg.Book.remember(s.machine.Peer()); err != nil {
			n.log.Warn("peer addresses not saved", "peer", s.rec.Peer, "err", err)
		}
	}
	if agreement != nil {
		n.log.Info("agreement changed", "ssa", agreement.ID, "status", agreement.Status.String(), "peer", s.rec.Peer)
		n.cfg.AgreementChanged(agreement, s.machine.Role())
	}
	if st := s.machine.State(); st != before {
		n.cfg.Transitions.WithLabelValues(s.machine.Role().String(), st.String()).Inc()
		if st == protocol.StateRejected && n.cfg.Rejections != nil {
			for _, code := range rejectionCodes(s.rec.Reasons) {
				n.cfg.Rejections.WithLabelValues(s.machine.Role().String(), code).Inc()
			}
		}
	}
	if st := s.machine.State(); st != before && cancelling(st) {
		n.log.Info("SSA cancelled: sharing stops now", "ssa", s.machine.Agreement().ID, "state", st.String(), "peer", s.rec.Peer)
		n.cfg.Cancelled(s.machine.Agreement().ID, now)
	}
}
