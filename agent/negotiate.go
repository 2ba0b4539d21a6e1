package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// ProtocolNegotiate is the stream protocol of the SSA negotiation point.
const ProtocolNegotiate = "/ssanet/negotiate/1.0.0"

// Errors callers branch on.
var (
	ErrUnknownSSA   = errors.New("agent: no negotiation for this SSA")
	ErrNoAnswer     = errors.New("agent: the peer did not answer")
	ErrNotDecidable = errors.New("agent: nothing waits for a decision on this SSA")
	// ErrTooManyOpen means a peer already has maxOpenPerPeer negotiations open with this
	// agent: its new request is refused until some come to rest.
	ErrTooManyOpen = errors.New("agent: too many negotiations open with this peer")
)

// maxOpenPerPeer bounds the negotiations a peer can have open with this agent (waiting for
// either side, or for a message to be acknowledged), so that one peer's requests cannot fill
// the memory and the store: an open negotiation stays in memory. A peer refused for it sends
// its request again later, like any request not answered.
const maxOpenPerPeer = 256

// session is one negotiation in memory: its pure state machine and its stored record. mu
// serialises the steps of one negotiation; I/O happens outside it. refs (guarded by the
// negotiator's mu) counts the goroutines using it: a session nobody uses whose negotiation is
// at rest is dropped from memory and restored from the store when next needed, so memory does
// not grow with the number of negotiations.
type session struct {
	mu     sync.Mutex
	m      *protocol.Negotiation
	rec    *storage.Negotiation
	refs   int
	atRest atomic.Bool
	// unbound is set on a request whose SSA ID the store refused to bind, as it names the SSA
	// of another negotiation (see receive): the request is rejected, and its record is kept
	// without that ID, which stays the other's.
	unbound bool
	// broken is set when a failed commit left the session neither in the state it had
	// reached nor readable back from the store (see rollback): every step refuses.
	broken error
	// ready, when not nil, is closed once acquire has read the negotiation from the store
	// (outside the negotiator's lock), or failed to, with loadErr.
	ready   chan struct{}
	loadErr error
}

// negotiator is the SSA negotiation point: it drives every negotiation of the agent.
type negotiator struct {
	a   *Agent
	now func() time.Time

	mu       sync.Mutex
	sessions map[string]*session
	// undelivered holds the negotiations whose last message of ours the peer has not
	// acknowledged, with when to send it again: what the resend loop sends.
	undelivered map[string]*resend
	// proposals holds the negotiations with a proposal unanswered, by its validity limit:
	// the resend loop lets them expire.
	proposals map[string]time.Time
	// open holds the requester of each provider-side negotiation not at rest (as stored, or
	// new in memory and not yet stored), and openPer how many each requester has (see
	// maxOpenPerPeer).
	open    map[string]string
	openPer map[string]int
	// places holds the requester of each provider-side negotiation whose SSA is in force or
	// proposed, and placesPer how many each requester holds (see takePlace).
	places    map[string]string
	placesPer map[string]int
}

// resend is when to send a negotiation's unacknowledged message again. Each failed attempt
// doubles the wait, from the retry interval up to maxResendDelay, so that a peer gone for
// long (decommissioned, or away for days) costs a lookup and a dial now and then, not every
// few seconds. When a connection with the peer comes up, the message is due again at once.
type resend struct {
	peer  string
	at    time.Time
	delay time.Duration
}

const maxResendDelay = 10 * time.Minute

// newNegotiator loads the negotiations with unacknowledged messages (a restart resumes them).
func newNegotiator(a *Agent, now func() time.Time) (*negotiator, error) {
	n := &negotiator{a: a, now: now, sessions: map[string]*session{}, undelivered: map[string]*resend{},
		proposals: map[string]time.Time{}, open: map[string]string{}, openPer: map[string]int{},
		places: map[string]string{}, placesPer: map[string]int{}}
	recs, err := a.store.Negotiations()
	if err != nil {
		return nil, fmt.Errorf("load negotiations: %w", err)
	}
	for _, rec := range recs {
		n.track(rec)
		if !rec.Delivered {
			n.undelivered[string(rec.ID)] = &resend{peer: rec.Peer} // due at once
		}
		if rec.State == protocol.StateProposalSent || rec.State == protocol.StateProposalReceived {
			n.proposals[string(rec.ID)] = time.Time{} // checked at the first round
		}
	}
	return n, nil
}

// setDelivered records whether the last message of ours in s was acknowledged, and whether s
// is at rest; the caller holds s.mu and has committed s.rec.
func (n *negotiator) setDelivered(s *session) {
	s.atRest.Store(atRest(s.m.State()) && s.rec.Delivered)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.track(s.rec)
	if s.rec.Delivered {
		delete(n.undelivered, string(s.rec.ID))
	} else if _, ok := n.undelivered[string(s.rec.ID)]; !ok {
		n.undelivered[string(s.rec.ID)] = &resend{peer: s.rec.Peer}
	}
	if st := s.m.State(); (st == protocol.StateProposalSent || st == protocol.StateProposalReceived) && s.m.Pending() != nil {
		n.proposals[string(s.rec.ID)] = s.m.Pending().Expires.Std()
	} else {
		delete(n.proposals, string(s.rec.ID))
	}
}

// track counts rec among its peer's open negotiations and among the places it holds, or
// not, as its state says. The caller holds n.mu.
func (n *negotiator) track(rec *storage.Negotiation) {
	provider := rec.Role == protocol.RoleProvider
	n.count(string(rec.ID), rec.Peer, provider && rec.State != protocol.StateNew &&
		!(atRest(rec.State) && rec.Delivered))
	countIn(n.places, n.placesPer, string(rec.ID), rec.Peer, provider && holdsPlace(rec.State))
}

// holdsPlace reports whether a provider's negotiation in state st takes one of its
// requester's places: its SSA is proposed or in force (a cancelled one is not).
func holdsPlace(st protocol.State) bool {
	switch st {
	case protocol.StateProposalSent, protocol.StateAcceptanceReceived, protocol.StateApproved,
		protocol.StateRevisionSent, protocol.StateRevisionReceived:
		return true
	}
	return false
}

// count counts negotiation id among requester's open negotiations, or not. The caller holds
// n.mu.
func (n *negotiator) count(id, requester string, open bool) {
	countIn(n.open, n.openPer, id, requester, open)
}

// countIn counts negotiation id as requester's in set and per, or not.
func countIn(set map[string]string, per map[string]int, id, requester string, in bool) {
	if peer, was := set[id]; was {
		if per[peer]--; per[peer] == 0 {
			delete(per, peer)
		}
		delete(set, id)
	}
	if in {
		set[id] = requester
		per[requester]++
	}
}

// takePlace gives the negotiation of s, about to propose, one of its requester's places
// (Config.MaxAgreementsPerPeer), or returns the rejection when the requester holds them
// all. Counted from the stored states (track), so the bound holds across restarts; a place
// is taken here, before the proposal is committed, so that parallel requests cannot pass
// the bound together, and track keeps or gives it back once the next state is committed.
func (n *negotiator) takePlace(s *session) *protocol.Reject {
	id, p := string(s.rec.ID), s.m.Peer().String()
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.places[id]; ok {
		return nil
	}
	if held, limit := n.placesPer[p], n.a.cfg.MaxAgreementsPerPeer; held >= limit {
		return &protocol.Reject{Reasons: []protocol.Reason{{Code: protocol.CodeAgreementLimit, Component: "agreements",
			Provider: fmt.Sprint(limit), Requester: fmt.Sprint(held + 1),
			Text: fmt.Sprintf("you hold %d SSAs with this provider, in force or proposed, as many as it allows a peer (max-agreements-per-peer): cancel one you no longer need, then request again", held)}}}
	}
	countIn(n.places, n.placesPer, id, p, true)
	return nil
}

// expireProposals lets the proposals whose validity limit has passed expire.
func (n *negotiator) expireProposals() {
	now := n.now()
	n.mu.Lock()
	var due [][]byte
	for id, exp := range n.proposals {
		if !now.Before(exp) {
			due = append(due, []byte(id))
		}
	}
	n.mu.Unlock()
	for _, id := range due {
		s, err := n.acquire(id, "")
		if err != nil {
			n.a.log.Error("restore negotiation", "err", err)
			continue
		}
		s.mu.Lock()
		if _, err := n.step(s, false, protocol.Tick{}); err != nil {
			n.a.log.Error("expire proposal", "ssa", s.rec.SSAID, "err", err)
		} else if s.m.State() == protocol.StateExpired {
			n.a.log.Info("proposal expired unanswered", "ssa", s.rec.SSAID, "peer", s.rec.Peer)
		}
		s.mu.Unlock()
		n.release(s)
	}
}

// acquire returns the negotiation nid, from memory or restored from the store; with a
// requester (a request from that peer) it makes a new provider-side one when none exists,
// unless the peer has too many open (ErrTooManyOpen). The caller releases it.
func (n *negotiator) acquire(nid []byte, requester peer.ID) (*session, error) {
	id := string(nid)
	n.mu.Lock()
	if s, ok := n.sessions[id]; ok {
		s.refs++
		n.mu.Unlock()
		if s.ready != nil {
			<-s.ready
		}
		if s.loadErr != nil {
			return nil, s.loadErr
		}
		return s, nil
	}
	// Read back outside n.mu (a long transcript's signatures take a while to check): those
	// who want the same negotiation meanwhile wait for ready.
	s := &session{refs: 1, ready: make(chan struct{})}
	n.sessions[id] = s
	n.mu.Unlock()
	err := n.fill(s, nid, requester)
	if err != nil {
		n.mu.Lock()
		delete(n.sessions, id)
		n.mu.Unlock()
		s.loadErr = err
	}
	close(s.ready)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// fill gives s negotiation nid as the store holds it or, for a request from requester that
// the store does not know, a new provider-side negotiation.
func (n *negotiator) fill(s *session, nid []byte, requester peer.ID) error {
	rec, m, err := n.load(nid)
	switch {
	case errors.Is(err, storage.ErrNotFound) && requester != "":
		// Counted from now on, not from its first commit, so that requests on parallel
		// streams cannot pass the bound together; release uncounts it if it is never stored.
		p := requester.String()
		n.mu.Lock()
		full := n.openPer[p] >= maxOpenPerPeer
		if !full {
			n.count(string(nid), p, true)
		}
		n.mu.Unlock()
		if full {
			return fmt.Errorf("%w: %d waiting; request again when some have ended", ErrTooManyOpen, maxOpenPerPeer)
		}
		now := n.now()
		s.m, s.rec = protocol.NewProvider(n.a.self), &storage.Negotiation{
			ID: slices.Clone(nid), Role: protocol.RoleProvider, Created: now, Updated: now}
		s.atRest.Store(true) // until a message is accepted: a refused one leaves nothing behind
		return nil
	case err != nil:
		return err
	}
	s.m, s.rec = m, rec
	s.atRest.Store(atRest(m.State()))
	return nil
}

// load reads negotiation nid back from the store: its record, and its state machine
// restored from the transcript.
func (n *negotiator) load(nid []byte) (*storage.Negotiation, *protocol.Negotiation, error) {
	rec, err := n.a.store.Negotiation(nid)
	if err != nil {
		return nil, nil, err
	}
	raw, err := n.a.store.Transcript(nid)
	if err != nil {
		return nil, nil, err
	}
	m, err := protocol.Restore(n.a.self, rec.Role, raw)
	if err != nil {
		return nil, nil, fmt.Errorf("restore negotiation %x: %w", nid, err)
	}
	return rec, m, nil
}

// rollback puts s back to what the store holds after a failed commit, so that nobody acts on
// a step that was not persisted: another goroutine may be waiting for s.mu, and the resend
// loop sends the last message of the transcript. A negotiation never persisted starts again
// from nothing. If the store cannot be read either, s is emptied and refuses every step.
// The caller holds s.mu.
func (n *negotiator) rollback(s *session) {
	s.atRest.Store(true) // dropped from memory when released: the next use reads the store
	s.unbound = false
	rec, m, err := n.load(s.rec.ID)
	defer func() {
		n.mu.Lock()
		n.track(s.rec)
		n.mu.Unlock()
	}()
	if err == nil {
		s.rec, s.m = rec, m
		return
	}
	if !errors.Is(err, storage.ErrNotFound) {
		s.broken = fmt.Errorf("negotiation %x cannot be read back after a failed commit: %w", s.rec.ID, err)
	}
	fresh := &storage.Negotiation{ID: s.rec.ID, Role: s.rec.Role, Created: s.rec.Created, Updated: s.rec.Created}
	m = protocol.NewProvider(n.a.self)
	if s.m.Role() == protocol.RoleRequester {
		if m, err = protocol.NewRequester(n.a.self, s.m.Peer(), s.rec.ID); err != nil {
			s.broken = err // cannot happen: the negotiation was created with the same arguments
		}
	}
	s.rec, s.m = fresh, m
}

// release ends a use of s; the last user of a session at rest (or never persisted: a refused
// first message) drops it from memory.
func (n *negotiator) release(s *session) {
	n.mu.Lock()
	defer n.mu.Unlock()
	s.refs--
	if s.refs == 0 && s.atRest.Load() {
		n.track(s.rec) // uncounts a new negotiation never stored
		delete(n.sessions, string(s.rec.ID))
	}
}

// atRest reports whether a negotiation in state st waits for nothing that this agent does
// by itself.
func atRest(st protocol.State) bool {
	switch st {
	case protocol.StateNew, protocol.StateApproved, protocol.StateRejected, protocol.StateAnnulled, protocol.StateExpired:
		return true
	}
	return false
}

// step applies events to a session in order and commits every message they record in one
// durable write, before anything is sent. It returns the last message to send. An answer
// written back on the peer's own stream (inbound) counts as delivered: if it is lost, the
// peer sends its message again and gets the same answer. A message this agent sends on its
// own stream is delivered when the peer acknowledges it, and sent again until then.
func (n *negotiator) step(s *session, inbound bool, events ...protocol.Event) (*protocol.Envelope, error) {
	if s.broken != nil {
		return nil, s.broken
	}
	var records [][]byte
	var agreement *protocol.SSA
	var send *protocol.Envelope
	now, before := n.now(), s.m.State()
	var refused error
	for i := 0; i < len(events); i++ {
		out, err := s.m.Step(now, events[i])
		if err != nil {
			if len(records) == 0 && s.m.State() == before {
				n.mu.Lock()
				n.track(s.rec) // gives back a place taken for a step that failed
				n.mu.Unlock()
				return nil, err
			}
			if len(records) == 0 {
				// The refusal moved the negotiation on (a decision on a proposal found
				// expired): persist that, then report it.
				refused = err
				break
			}
			// Keep what the earlier events did; the decision is left to an operator.
			n.a.log.Error("automatic decision failed", "ssa", s.rec.SSAID, "err", err)
			s.rec.Note = "automatic decision failed: " + err.Error()
			break
		}
		if out.Duplicate || out.Superseded {
			return out.Send, nil // nothing new to persist: the original answer, or an acknowledgement
		}
		for _, e := range out.Record {
			records = append(records, e.Bytes())
		}
		if out.Agreement != nil {
			agreement = out.Agreement
			s.rec.Reasons = nil
		}
		if out.Reasons != nil {
			s.rec.Reasons = out.Reasons
		}
		if out.Send != nil {
			send = out.Send
		}
		if decision := n.decide(s); decision != nil {
			events = append(events, decision)
		}
	}
	if len(records) == 0 && s.m.State() == before {
		n.setDelivered(s) // a tick that changed nothing: nothing to persist
		return nil, nil
	}
	s.rec.State, s.rec.Peer, s.rec.Updated = s.m.State(), s.m.Peer().String(), now
	switch {
	case s.m.Pending() != nil:
		s.rec.SSAID = s.m.Pending().ID
	case s.m.Agreement() != nil:
		s.rec.SSAID = s.m.Agreement().ID
	case s.rec.SSAID == "" && len(s.m.Transcript()) > 0 && !s.unbound:
		s.rec.SSAID = s.m.Transcript()[0].SSA.ID // a request rejected at once
	}
	if len(records) > 0 {
		// Our last message is the one we send now, or an answer written back on the peer's
		// stream, or the peer's message answers ours. A step that records nothing (a
		// proposal expiring) leaves ours as it was: an expired proposal the requester never
		// got is still sent, so that it learns of it.
		s.rec.Delivered = send == nil || inbound
	}
	if err := n.a.store.Commit(s.rec, records, agreement); err != nil {
		id := s.rec.ID
		n.rollback(s) // the state machine moved on but the store did not
		return nil, fmt.Errorf("persist negotiation %x: %w", id, err)
	}
	n.setDelivered(s)
	// Keep the peer's addresses where a restart finds them whenever this agent will have to
	// reach the peer by itself: to resend, to send a decision, to deliver and monitor.
	if agreement != nil || !s.rec.Delivered || s.m.State().AwaitsDecision() {
		if err := n.a.book.remember(n.a.host, s.m.Peer()); err != nil {
			n.a.log.Warn("peer addresses not saved", "peer", s.rec.Peer, "err", err)
		}
	}
	if agreement != nil {
		n.a.log.Info("agreement changed", "ssa", agreement.ID, "status", agreement.Status.String(), "peer", s.rec.Peer)
		n.a.mgr.agreementChanged(agreement, s.m.Role())
	}
	if st := s.m.State(); st != before && cancelling(st) {
		n.a.log.Info("SSA cancelled: sharing stops now", "ssa", s.m.Agreement().ID, "state", st.String(), "peer", s.rec.Peer)
		n.a.mgr.cancelled(s.m.Agreement().ID, now)
	}
	return send, refused
}

// decide returns the automatic decision the agent takes in the session's state, or nil when
// it waits (for the peer, or for an operator).
func (n *negotiator) decide(s *session) protocol.Event {
	switch s.m.State() {
	case protocol.StateRequestReceived:
		return n.answerRequest(s)
	case protocol.StateProposalReceived:
		if n.a.cfg.Accept != "auto" {
			s.rec.Note = "proposal held for an operator: ssanet ssa approve|decline " + s.m.Pending().ID
			return nil
		}
		if reasons := n.unenforceable(s.m.Pending()); reasons != nil {
			return protocol.Reject{Reasons: reasons}
		}
		if reasons := protocol.Satisfies(s.m.Pending(), n.request(s)); len(reasons) > 0 {
			return protocol.Reject{Reasons: reasons}
		}
		return protocol.Accept{}
	case protocol.StateRevisionReceived:
		own := n.ownTemplate(s)
		if n.a.cfg.Accept != "auto" || own == nil {
			s.rec.Note = "revision held for an operator: ssanet ssa approve|decline " + s.m.Pending().ID
			return nil
		}
		if reasons := protocol.Satisfies(s.m.Pending(), own); len(reasons) > 0 {
			return protocol.Reject{Reasons: reasons}
		}
		return protocol.Accept{}
	}
	return nil
}

// request is the requester's own request SSA: the first message of the transcript.
func (n *negotiator) request(s *session) *protocol.SSA { return s.m.Transcript()[0].SSA }

// ownTemplate is what this side required: the request for a requester, the offer's terms for
// a provider (nil if the offer is gone).
func (n *negotiator) ownTemplate(s *session) *protocol.SSA {
	if s.m.Role() == protocol.RoleRequester {
		return n.request(s)
	}
	o := n.offer(s.rec.OfferID)
	if o == nil {
		return nil
	}
	return &o.Terms
}

func (n *negotiator) offer(id string) *protocol.Offer {
	offers, err := n.a.store.Offers()
	if err != nil {
		n.a.log.Error("read offers", "err", err)
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
	req := s.m.Pending()
	if s.unbound {
		return protocol.Reject{Reasons: []protocol.Reason{{Code: protocol.CodeSSAIDInUse, Component: "identifier",
			Requester: req.ID, Text: "this SSA ID already names the SSA of another negotiation with this provider: request again with a new ID (leave id out of the template and one is made)"}}}
	}
	offers, err := n.a.store.Offers()
	if err != nil {
		n.a.log.Error("read offers", "err", err)
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
			if r := n.takePlace(s); r != nil {
				return *r
			}
			return protocol.Propose{SSA: prop}
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

// meet is the proposal from a request and an offer, with this agent's contact details. A
// proposal whose policy the enforcement point could not enforce is refused here, at
// negotiation time: fail closed.
func (n *negotiator) meet(req *protocol.SSA, o *protocol.Offer) (*protocol.SSA, []protocol.Reason) {
	prop, conflicts := protocol.Meet(req, o, protocol.FromTime(n.now()))
	if prop == nil {
		return nil, conflicts
	}
	if reasons := n.unenforceable(prop); reasons != nil {
		return nil, reasons
	}
	fillContact(&prop.Participants.Provider, n.a.cfg.Contact)
	return prop, nil
}

// unenforceable says why the enforcement point could not enforce s (a filter too costly for
// a sensor among them), as the reasons of a rejection; nil when it can.
func (n *negotiator) unenforceable(s *protocol.SSA) []protocol.Reason {
	err := n.a.compiler.Check(s)
	if err == nil {
		return nil
	}
	var r *policy.Refusal
	if errors.As(err, &r) {
		return []protocol.Reason{r.ProtocolReason()}
	}
	return []protocol.Reason{{Code: protocol.CodePolicyUnenforceable, Component: "policy", Text: err.Error()}}
}

func fillContact(p *protocol.Participant, c protocol.Participant) {
	if p.Affiliation == "" && p.Name == "" && p.Email == "" && p.Address == "" {
		id := p.PeerID
		*p = c
		p.PeerID = id
	}
}

// firstFrameTimeout is how long an inbound negotiation stream may stay silent after it opens.
const firstFrameTimeout = 5 * time.Second

// handleStream serves one inbound negotiation stream: frames in, answers out, until the peer
// closes it. Any misbehaviour resets the stream.
func (n *negotiator) handleStream(st network.Stream) {
	remote := st.Conn().RemotePeer()
	log := n.a.log.With("peer", remote, "proto", ProtocolNegotiate)
	r := bufio.NewReader(st)
	timeout := time.Duration(n.a.cfg.MessageTimeout)
	// The first frame is written as the stream opens: a stream still silent after
	// firstFrameTimeout gives its place (the protocol's streams are bounded) to others.
	st.SetReadDeadline(time.Now().Add(min(timeout, firstFrameTimeout)))
	if _, err := r.Peek(1); errors.Is(err, io.EOF) {
		st.Close()
		return
	} else if err != nil {
		log.Debug("negotiation stream silent", "err", err)
		st.Reset()
		return
	}
	for {
		st.SetDeadline(time.Now().Add(timeout))
		raw, err := readFrame(r, protocol.MaxMessageSize)
		if err != nil {
			if errors.Is(err, io.EOF) {
				st.Close()
				return
			}
			log.Debug("negotiation stream refused", "err", err)
			st.Reset()
			return
		}
		answer, err := n.receive(raw, remote)
		if err != nil {
			n.a.refusals.warn(remote, "message refused", err, "proto", ProtocolNegotiate)
			st.Reset()
			return
		}
		var b []byte
		if answer != nil {
			b = answer.Bytes()
		}
		if err := writeFrame(st, b); err != nil {
			log.Debug("answer not sent", "err", err)
			st.Reset()
			return
		}
	}
}

// receive opens a message from remote, steps its negotiation (with the automatic decisions),
// persists, and returns the answer to send back, if any.
func (n *negotiator) receive(raw []byte, remote peer.ID) (*protocol.Envelope, error) {
	env, err := protocol.Open(raw)
	if err != nil {
		return nil, err
	}
	if env.Sender != remote {
		return nil, fmt.Errorf("%w: signed by %s, sent by %s", protocol.ErrWrongSender, env.Sender, remote)
	}
	var requester peer.ID
	if env.Header.Type == protocol.MsgRequest {
		requester = remote
	}
	s, err := n.acquire(env.Header.Negotiation, requester)
	if err != nil {
		return nil, err
	}
	defer n.release(s)
	s.mu.Lock()
	defer s.mu.Unlock()
	answer, err := n.step(s, true, protocol.Receive{Env: env})
	if errors.Is(err, storage.ErrSSAInUse) && env.Header.Type == protocol.MsgRequest && s.m.State() == protocol.StateNew {
		// The store refused to bind the request's SSA ID to this negotiation (rollback left
		// the session as new): answer with a rejection that says so, kept without the ID.
		s.unbound = true
		return n.step(s, true, protocol.Receive{Env: env})
	}
	return answer, err
}

// deliver sends a message of session s to its peer and goes on answering on the same stream
// until the exchange rests: the peer acknowledges with no answer, or we have nothing to send.
func (n *negotiator) deliver(ctx context.Context, s *session, p peer.ID, env *protocol.Envelope) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(n.a.cfg.MessageTimeout))
	defer cancel()
	n.a.findAddrs(ctx, p)
	st, err := n.a.host.NewStream(ctx, p, ProtocolNegotiate)
	if err != nil {
		return fmt.Errorf("open negotiation stream to %s: %w", p, err)
	}
	r := bufio.NewReader(st)
	for env != nil {
		sent := env
		st.SetDeadline(time.Now().Add(time.Duration(n.a.cfg.MessageTimeout)))
		if err := writeFrame(st, env.Bytes()); err != nil {
			st.Reset()
			return err
		}
		raw, err := readFrame(r, protocol.MaxMessageSize)
		if err != nil {
			st.Reset()
			return fmt.Errorf("%w: %v", ErrNoAnswer, err)
		}
		s.mu.Lock()
		if len(raw) == 0 {
			env = nil
			// The peer acknowledged what was written: it is delivered if it is still our last
			// message (the operator may have added one meanwhile, which waits for its own).
			if last := s.m.Transcript(); len(last) > 0 && bytes.Equal(last[len(last)-1].Hash(), sent.Hash()) {
				s.rec.Delivered = true
				if err = n.a.store.Commit(s.rec, nil, nil); err == nil {
					n.setDelivered(s)
				} else {
					n.rollback(s)
				}
			}
		} else {
			env, err = n.receiveAnswer(s, raw, p)
		}
		s.mu.Unlock()
		if err != nil {
			st.Reset()
			return err
		}
	}
	return st.Close()
}

func (n *negotiator) receiveAnswer(s *session, raw []byte, p peer.ID) (*protocol.Envelope, error) {
	ans, err := protocol.Open(raw)
	if err != nil {
		return nil, err
	}
	if ans.Sender != p {
		return nil, fmt.Errorf("%w: answer signed by %s", protocol.ErrWrongSender, ans.Sender)
	}
	return n.step(s, false, protocol.Receive{Env: ans})
}

// resendLoop sends again, every interval, the last message of each negotiation that the peer
// has not acknowledged (after a dropped connection or a restart). The peer's duplicate
// detection makes this safe.
func (n *negotiator) resendLoop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		n.resendPending(ctx, interval)
		n.expireProposals()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (n *negotiator) resendPending(ctx context.Context, interval time.Duration) {
	now := n.now()
	n.mu.Lock()
	byPeer := map[string][][]byte{}
	for id, r := range n.undelivered {
		// A session in use is being delivered right now.
		if s, ok := n.sessions[id]; (!ok || s.refs == 0) && !now.Before(r.at) {
			byPeer[r.peer] = append(byPeer[r.peer], []byte(id))
		}
	}
	n.mu.Unlock()
	// One peer at a time for each worker, so that a peer that does not answer (each attempt
	// waits up to message-timeout) holds up only the messages to itself.
	peers := make(chan [][]byte, len(byPeer))
	for _, ids := range byPeer {
		peers <- ids
	}
	close(peers)
	var wg sync.WaitGroup
	for range min(resendWorkers, len(byPeer)) {
		wg.Go(func() {
			for ids := range peers {
				for i, id := range ids {
					if ctx.Err() != nil {
						return
					}
					if !n.resend(ctx, id, interval) { // the peer is away: the rest wait too
						for _, rest := range ids[i+1:] {
							n.backOff(rest, interval)
						}
						break
					}
				}
			}
		})
	}
	wg.Wait()
}

// resendWorkers is how many peers the resend loop sends to at once.
const resendWorkers = 8

// resend sends negotiation id's last message again, and backs off if it fails. It reports
// whether the message went through (or there was nothing to send).
func (n *negotiator) resend(ctx context.Context, id []byte, interval time.Duration) bool {
	s, err := n.acquire(id, "")
	if err != nil {
		n.a.log.Error("restore negotiation", "err", err)
		n.backOff(id, interval)
		return true // the peer is not to blame
	}
	defer n.release(s)
	s.mu.Lock()
	p, tr := s.m.Peer(), s.m.Transcript()
	var last *protocol.Envelope
	if len(tr) > 0 && tr[len(tr)-1].Sender == n.a.self.PeerID() {
		last = tr[len(tr)-1]
	} else { // the peer's message is the last: nothing of ours waits
		n.mu.Lock()
		delete(n.undelivered, string(id))
		n.mu.Unlock()
	}
	s.mu.Unlock()
	if last == nil {
		return true
	}
	if err := n.deliver(ctx, s, p, last); err != nil {
		n.a.log.Debug("resend failed", "peer", p, "err", err)
		n.backOff(id, interval)
		return false
	}
	return true
}

// connected makes the unacknowledged messages to a peer that just connected due at once.
func (n *negotiator) connected(_ network.Network, c network.Conn) {
	p := c.RemotePeer().String()
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, r := range n.undelivered {
		if r.peer == p {
			r.at, r.delay = time.Time{}, 0
		}
	}
}

// backOff doubles the wait before negotiation id's message is sent again, if it is still
// unacknowledged.
func (n *negotiator) backOff(id []byte, interval time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	r, ok := n.undelivered[string(id)]
	if !ok {
		return
	}
	r.delay = min(max(2*r.delay, interval), maxResendDelay)
	r.at = n.now().Add(r.delay)
}

// Request starts a negotiation as requester (Appendix I steps ①–②): the template becomes
// SSA-A, sent to the provider; the exchange goes on as far as automatic decisions take it.
func (a *Agent) Request(ctx context.Context, provider peer.AddrInfo, tmpl *protocol.SSA) (*storage.Negotiation, error) {
	n := a.neg
	nid := make([]byte, 16)
	rand.Read(nid)
	m, err := protocol.NewRequester(a.self, provider.ID, nid)
	if err != nil {
		return nil, err
	}
	a.host.Peerstore().AddAddrs(provider.ID, provider.Addrs, peerstore.PermanentAddrTTL)
	ssa := tmpl.Clone()
	if ssa.ID == "" {
		ssa.ID = newSSAID()
	}
	fillContact(&ssa.Participants.Requester, a.cfg.Contact)
	now := n.now()
	s := &session{m: m, rec: &storage.Negotiation{ID: nid, Role: protocol.RoleRequester, Created: now, Updated: now}, refs: 1}
	s.atRest.Store(true) // until the request is committed: a refused one leaves nothing behind
	// In the map before the first commit, so that the resend loop, which may see the
	// negotiation as soon as it is committed, uses this session and not a second one.
	n.mu.Lock()
	n.sessions[string(nid)] = s
	n.mu.Unlock()
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
		a.log.Warn("request not delivered yet; it will be sent again", "peer", provider.ID, "ssa", ssa.ID, "err", err)
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

// Negotiation returns the stored record of the negotiation of an SSA (any version's ID).
func (a *Agent) Negotiation(ssaID string) (*storage.Negotiation, error) {
	rec, err := a.store.NegotiationBySSA(ssaID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%w %q (see ssanet ssa list)", ErrUnknownSSA, ssaID)
	}
	return rec, err
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
	return a.act(ctx, ssaID, func(s *session) (protocol.Event, error) {
		if !s.m.State().AwaitsDecision() {
			return nil, fmt.Errorf("%w %s: it is %s", ErrNotDecidable, ssaID, s.m.State())
		}
		if d == Decline {
			if why == "" {
				why = "declined by the operator"
			}
			return protocol.Reject{Reasons: []protocol.Reason{{Code: protocol.CodeDeclined, Text: why}}}, nil
		}
		if s.m.State() != protocol.StateRequestReceived {
			return protocol.Accept{}, nil
		}
		o := a.neg.offer(s.rec.OfferID)
		if o == nil {
			return nil, fmt.Errorf("the offer %q this request matched was removed; decline it", s.rec.OfferID)
		}
		prop, conflicts := a.neg.meet(s.m.Pending(), o)
		if conflicts != nil {
			return protocol.Reject{Reasons: conflicts}, nil
		}
		if r := a.neg.takePlace(s); r != nil {
			return *r, nil
		}
		return protocol.Propose{SSA: prop}, nil
	})
}

// Cancel cancels an approved SSA (clause 10.2.3).
func (a *Agent) Cancel(ctx context.Context, ssaID string) (*storage.Negotiation, error) {
	return a.act(ctx, ssaID, func(*session) (protocol.Event, error) { return protocol.Cancel{}, nil })
}

// Revise proposes a new version of an approved SSA (clause 10.2.4): the template's terms
// with a new ID, superseding the version in force.
func (a *Agent) Revise(ctx context.Context, ssaID string, tmpl *protocol.SSA) (*storage.Negotiation, error) {
	return a.act(ctx, ssaID, func(s *session) (protocol.Event, error) {
		v := tmpl.Clone()
		v.ID = newSSAID()
		return protocol.Revise{SSA: v}, nil
	})
}

// act steps the negotiation of ssaID with the event ev builds, persists, and delivers.
func (a *Agent) act(ctx context.Context, ssaID string, ev func(*session) (protocol.Event, error)) (*storage.Negotiation, error) {
	rec, err := a.Negotiation(ssaID)
	if err != nil {
		return nil, err
	}
	s, err := a.neg.acquire(rec.ID, "")
	if err != nil {
		return nil, err
	}
	defer a.neg.release(s)
	s.mu.Lock()
	p := s.m.Peer()
	e, err := ev(s)
	var env *protocol.Envelope
	if err == nil {
		s.rec.Note = ""
		env, err = a.neg.step(s, false, e)
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if env != nil {
		if err := a.neg.deliver(ctx, s, p, env); err != nil {
			a.log.Warn("message not delivered yet; it will be sent again", "ssa", ssaID, "err", err)
		}
	}
	return a.store.Negotiation(rec.ID)
}
