package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

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

// negotiatorConfig is what the negotiation point is built from besides the host, its
// identity, the store, the logger and the clock.
type negotiatorConfig struct {
	// MessageTimeout bounds every read and write on a negotiation stream, and each delivery.
	MessageTimeout time.Duration
	// RetryInterval is the first wait before an unacknowledged message is sent again, and
	// how often requests, proposals and revisions are checked for expiry.
	RetryInterval time.Duration
	// RequestValidity is how long a request or revision this agent sends waits for an
	// answer (0: DefaultRequestValidity).
	RequestValidity time.Duration
	// AutoAccept decides the proposals and revisions received that satisfy what this side
	// asked for; otherwise they wait for an operator.
	AutoAccept bool
	// MaxAgreementsPerPeer bounds the SSAs a requester holds with this provider (admission).
	MaxAgreementsPerPeer int
	// Contact fills in this side's participant where a proposal or request leaves it empty.
	Contact protocol.Participant
	// Methods is what this agent can honour of an SSA's method (method.go).
	Methods methods
	// Addrs are this agent's addresses, the method.access of the SSAs it provides.
	Addrs func() []string

	// Offers returns this agent's offers, which requests are answered from.
	Offers func() ([]*protocol.Offer, error)
	// Enforceable says why the enforcement point could not enforce an SSA, or nil.
	Enforceable func(*protocol.SSA) error
	// FetchOffers reads a provider's current signed offers, which a requester's revision is
	// met against (nil: revisions are sent as written).
	FetchOffers func(context.Context, peer.ID) ([]*protocol.Offer, error)
	// FindAddrs makes sure the peerstore has addresses for a peer before it is dialled.
	FindAddrs func(context.Context, peer.ID)
	// Member says why a peer may not be sent negotiation messages (outside the community),
	// or nil (members.go); nil: anyone may.
	Member func(peer.ID) error
	// Book keeps the addresses of the peers this agent must reach by itself.
	Book *addrBook
	// Refusals logs refused messages, rate-limited.
	Refusals *refusalLog
	// Reach keeps the last failure to reach each peer, shared with the exchange's dials.
	Reach *reachLog
	// Transitions counts the committed steps that changed a negotiation's state, by role
	// and the state reached.
	Transitions *prometheus.CounterVec
	// Rejections counts the reason codes of the negotiations that end rejected, by role and
	// code (rejectionCodes).
	Rejections *prometheus.CounterVec

	// AgreementChanged is told of each agreement a committed step made or changed (approved,
	// revised, annulled), with this side's role.
	AgreementChanged func(*protocol.SSA, protocol.Role)
	// Cancelled is told when a committed step starts the cancellation of an SSA in force:
	// sharing stops at once.
	Cancelled func(ssaID string, at time.Time)
}

// negotiator is the SSA negotiation point: it drives every negotiation of the agent.
type negotiator struct {
	host  host.Host
	self  *protocol.Identity
	store *storage.Store
	log   *slog.Logger
	now   func() time.Time
	cfg   negotiatorConfig

	sessions  *sessionCache
	admission *admission
	// reach keeps the last failure to reach each peer (dialerr.go): cfg.Reach.
	reach *reachLog

	mu sync.Mutex
	// undelivered holds the negotiations whose last message of ours the peer has not
	// acknowledged, with when to send it again: what the resend loop sends.
	undelivered map[string]*resend
	// expiries holds the negotiations with a request, proposal, revision or withdrawal
	// unanswered, by its validity limit: the resend loop lets them expire.
	expiries map[string]time.Time
}

// newNegotiator loads the negotiations with unacknowledged messages (a restart resumes them)
// and counts what each peer holds.
func newNegotiator(h host.Host, self *protocol.Identity, store *storage.Store, log *slog.Logger,
	now func() time.Time, cfg negotiatorConfig) (*negotiator, error) {
	n := &negotiator{host: h, self: self, store: store, log: log, now: now, cfg: cfg,
		admission:   newAdmission(cfg.MaxAgreementsPerPeer),
		undelivered: map[string]*resend{}, expiries: map[string]time.Time{}}
	// A session dropped from memory uncounts its negotiation if it was never stored.
	n.sessions = newSessionCache(func(s *session) { n.admission.track(s.rec) })
	n.reach = cfg.Reach
	recs, err := store.Negotiations()
	if err != nil {
		return nil, fmt.Errorf("load negotiations: %w", err)
	}
	for _, rec := range recs {
		n.admission.track(rec)
		// A request abandoned or expired is not sent again (see lapsed; the resend loop
		// drops a provider's expired proposal when it finds the request expired too).
		gone := rec.State == protocol.StateFailed || (rec.State == protocol.StateExpired && rec.Role == protocol.RoleRequester)
		if !rec.Delivered && !gone {
			n.undelivered[string(rec.ID)] = &resend{peer: rec.Peer} // due at once
		}
		if mayExpire(rec.State) {
			n.expiries[string(rec.ID)] = time.Time{} // checked at the first round
		}
	}
	return n, nil
}

// acquire returns the negotiation nid, from memory or restored from the store; with a
// requester (a request from that peer) it makes a new provider-side one when none exists,
// unless the peer has too many open (ErrTooManyOpen). The caller releases it.
func (n *negotiator) acquire(nid []byte, requester peer.ID) (*session, error) {
	return n.sessions.get(string(nid), func(s *session) error { return n.fill(s, nid, requester) })
}

// release ends a use of s.
func (n *negotiator) release(s *session) { n.sessions.release(s) }

// fill gives s negotiation nid as the store holds it or, for a request from requester that
// the store does not know, a new provider-side negotiation.
func (n *negotiator) fill(s *session, nid []byte, requester peer.ID) error {
	rec, m, err := n.load(nid)
	switch {
	case errors.Is(err, storage.ErrNotFound) && requester != "":
		if err := n.admission.admit(string(nid), requester.String()); err != nil {
			return err
		}
		now := n.now()
		s.machine, s.rec = protocol.NewProvider(n.self), &storage.Negotiation{
			ID: slices.Clone(nid), Role: protocol.RoleProvider, Created: now, Updated: now}
		s.atRest.Store(true) // until a message is accepted: a refused one leaves nothing behind
		return nil
	case err != nil:
		return err
	}
	s.machine, s.rec = m, rec
	s.atRest.Store(atRest(m.State()))
	return nil
}

// load reads negotiation nid back from the store: its record, and its state machine
// restored from the transcript.
func (n *negotiator) load(nid []byte) (*storage.Negotiation, *protocol.Negotiation, error) {
	rec, err := n.store.Negotiation(nid)
	if err != nil {
		return nil, nil, err
	}
	raw, err := n.store.Transcript(nid)
	if err != nil {
		return nil, nil, err
	}
	m, err := protocol.Restore(n.self, rec.Role, raw)
	if err != nil {
		return nil, nil, fmt.Errorf("restore negotiation %x: %w", nid, err)
	}
	if err := n.reconcile(rec, m); err != nil {
		return nil, nil, fmt.Errorf("restore negotiation %x: %w", nid, err)
	}
	return rec, m, nil
}

// reconcile brings m, restored from its transcript, to the state the record holds where a
// step that sent no message moved it on: an abandoned request (failed), an expired request
// or proposal, a revision dropped when it expired. Each is taken again, as it was.
func (n *negotiator) reconcile(rec *storage.Negotiation, m *protocol.Negotiation) error {
	st := m.State()
	switch {
	case rec.State == st:
		return nil
	case rec.State == protocol.StateFailed && st == protocol.StateRequestSent:
		_, err := m.Step(n.now(), protocol.Abandon{Reasons: rec.Reasons})
		return err
	case rec.State == protocol.StateExpired && mayExpire(st),
		rec.State == protocol.StateApproved && (st == protocol.StateRevisionSent || st == protocol.StateRevisionReceived):
		if _, err := m.Step(n.now(), protocol.Tick{}); err != nil {
			return err
		}
	}
	if m.State() != rec.State {
		n.log.Warn("negotiation restored in another state than recorded", "ssa", rec.SSAID, "transcript", m.State().String(), "record", rec.State.String())
	}
	return nil
}

// mayExpire reports whether a negotiation in state st waits for an answer to an SSA with a
// validity limit.
func mayExpire(st protocol.State) bool {
	switch st {
	case protocol.StateRequestSent, protocol.StateRequestReceived, protocol.StateProposalSent, protocol.StateProposalReceived,
		protocol.StateRevisionSent, protocol.StateRevisionReceived, protocol.StateWithdrawalSent:
		return true
	}
	return false
}

// expiry is when the resend loop is to tick m: the validity limit of the SSA it waits on
// (for a withdrawal, MaxSkew later: see protocol.Tick), or false if nothing in it expires.
func expiry(m *protocol.Negotiation) (time.Time, bool) {
	p := m.Pending()
	if !mayExpire(m.State()) || p == nil || p.Expires == 0 {
		return time.Time{}, false
	}
	if m.State() == protocol.StateWithdrawalSent {
		return p.Expires.Std().Add(protocol.MaxSkew), true
	}
	return p.Expires.Std(), true
}

// validity is how long a request or revision this agent sends waits for an answer.
func (n *negotiator) validity() time.Duration {
	if n.cfg.RequestValidity > 0 {
		return n.cfg.RequestValidity
	}
	return time.Duration(DefaultRequestValidity)
}

// rollback puts s back to what the store holds after a failed commit, so that nobody acts on
// a step that was not persisted: another goroutine may be waiting for s.mu, and the resend
// loop sends the last message of the transcript. A negotiation never persisted starts again
// from nothing. If the store cannot be read either, s is emptied and refuses every step.
// The caller holds s.mu.
func (n *negotiator) rollback(s *session) {
	s.atRest.Store(true) // dropped from memory when released: the next use reads the store
	s.unbound = false
	defer func() { n.admission.track(s.rec) }()
	rec, m, err := n.load(s.rec.ID)
	if err == nil {
		s.rec, s.machine = rec, m
		return
	}
	if !errors.Is(err, storage.ErrNotFound) {
		s.broken = fmt.Errorf("negotiation %x cannot be read back after a failed commit: %w", s.rec.ID, err)
	}
	fresh := &storage.Negotiation{ID: s.rec.ID, Role: s.rec.Role, Created: s.rec.Created, Updated: s.rec.Created}
	m = protocol.NewProvider(n.self)
	if s.machine.Role() == protocol.RoleRequester {
		if m, err = protocol.NewRequester(n.self, s.machine.Peer(), s.rec.ID); err != nil {
			s.broken = err // cannot happen: the negotiation was created with the same arguments
		}
	}
	s.rec, s.machine = fresh, m
}

// setDelivered records whether the last message of ours in s was acknowledged, and whether s
// is at rest; the caller holds s.mu and has committed s.rec.
func (n *negotiator) setDelivered(s *session) {
	s.atRest.Store(atRest(s.machine.State()) && s.rec.Delivered)
	n.admission.track(s.rec)
	id := string(s.rec.ID)
	n.mu.Lock()
	defer n.mu.Unlock()
	if s.rec.Delivered || lapsed(s.machine, n.now()) {
		delete(n.undelivered, id)
	} else if _, ok := n.undelivered[id]; !ok {
		n.undelivered[id] = &resend{peer: s.rec.Peer}
	}
	if exp, ok := expiry(s.machine); ok {
		n.expiries[id] = exp
	} else {
		delete(n.expiries, id)
	}
}

// atRest reports whether a negotiation in state st waits for nothing that this agent does
// by itself.
func atRest(st protocol.State) bool {
	return st == protocol.StateNew || st == protocol.StateApproved || st.Ended()
}
