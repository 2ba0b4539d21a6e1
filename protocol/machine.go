package protocol

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Role is the part an agent plays in a negotiation.
type Role uint8

// Roles.
const (
	RoleRequester Role = 1
	RoleProvider  Role = 2
)

func (r Role) String() string {
	switch r {
	case RoleRequester:
		return "requester"
	case RoleProvider:
		return "provider"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// State is where a negotiation stands.
type State uint8

// States. "Received" states wait for a local decision; "Sent" states wait for the peer.
const (
	StateNew                  State = iota
	StateRequestSent                // requester: waiting for a proposal or a rejection
	StateRequestReceived            // provider: deciding on the request
	StateProposalSent               // provider: waiting for an acceptance or a rejection
	StateProposalReceived           // requester: deciding on the proposal
	StateAcceptanceSent             // requester: waiting for the confirmation
	StateAcceptanceReceived         // provider: answering the acceptance
	StateApproved                   // an approved SSA is in force
	StateCancellationSent           // waiting for the confirmation of a cancellation
	StateCancellationReceived       // answering a cancellation
	StateRevisionSent               // waiting for the confirmation or rejection of a revision
	StateRevisionReceived           // deciding on a revision
	StateRejected                   // ended: the request or the proposal was rejected
	StateAnnulled                   // ended: the SSA was cancelled
	StateExpired                    // the validity of the request or proposal passed unanswered
	StateFailed                     // ended: the request could never reach the peer (Abandon)
	StateWithdrawalSent             // requester: waiting for the confirmation of its withdrawal
	StateWithdrawalReceived         // provider: answering the requester's withdrawal
	StateWithdrawn                  // ended: the requester withdrew its request before the agreement
)

var stateNames = [...]string{"new", "request-sent", "request-received", "proposal-sent", "proposal-received",
	"acceptance-sent", "acceptance-received", "approved", "cancellation-sent", "cancellation-received",
	"revision-sent", "revision-received", "rejected", "annulled", "expired", "failed",
	"withdrawal-sent", "withdrawal-received", "withdrawn"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// MarshalText writes the state's name.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Ended reports whether s is final: the negotiation's outcome is settled. (A provider whose
// proposal expired still answers a late acceptance, with a rejection; a requester whose
// request expired still takes a rejection made before the provider's clock said so.)
func (s State) Ended() bool {
	switch s {
	case StateRejected, StateAnnulled, StateExpired, StateFailed, StateWithdrawn:
		return true
	}
	return false
}

// AwaitsDecision reports whether the negotiation waits for a local decision.
func (s State) AwaitsDecision() bool {
	return s == StateRequestReceived || s == StateProposalReceived || s == StateRevisionReceived
}

// Errors of the state machine. A caller branches on them with errors.Is; a refused message
// leaves the negotiation unchanged.
var (
	ErrUnexpected       = errors.New("protocol: message or decision not allowed in this state")
	ErrWrongNegotiation = errors.New("protocol: message belongs to another negotiation")
	ErrWrongSender      = errors.New("protocol: message is not from the negotiating peer")
	ErrBrokenChain      = errors.New("protocol: message does not follow the transcript")
	ErrTermsChanged     = errors.New("protocol: message does not carry the terms it answers")
	ErrProposalExpired  = errors.New("protocol: proposal expired")
	ErrRequestExpired   = errors.New("protocol: request expired")
	ErrRevisionExpired  = errors.New("protocol: revision expired")
	ErrTooManyMessages  = errors.New("protocol: negotiation has too many messages")
	ErrClockSkew        = errors.New("protocol: message dated too far ahead of this clock, or before the message it follows")
)

// MaxMessages bounds a negotiation's transcript (and so its rounds of revision). The
// messages of one side that gave way in a crossing (see crossing) do not count: they are in
// that side's transcript only, and both sides must count alike.
const MaxMessages = 256

// MaxTranscript bounds what one side's transcript holds: MaxMessages that count and the
// messages of its own that gave way, at most one for every two that count (the message that
// prevailed and its answer).
const MaxTranscript = MaxMessages + MaxMessages/2

// room is how many messages of the transcript a message of type t needs, itself included:
// room for the answer it calls for and, for a revision, for cancelling the SSA in force
// afterwards. Sender and receiver apply the same rule, so a message one side may send the
// other may always receive, and an SSA in force can always be cancelled.
func room(t MsgType) int {
	switch t {
	case MsgConfirmation, MsgRejection:
		return 1
	case MsgRevision:
		return 4
	}
	return 2
}

// MaxSkew is how far ahead of the receiver's clock a message's time may be, and how far
// before the time of the message it follows: beyond that one of the clocks is wrong. A
// message may otherwise be dated long before now: it may be sent again after the peers were
// apart for hours (it must be the same bytes, so it keeps its time), and an old one gains
// nothing from its age. It is signed by the authenticated peer, chained to the transcript
// and answered once (a copy gets the same answer); a proposal's validity is judged by the
// receiver's own clock.
const MaxSkew = 10 * time.Minute

// Event is what drives a Negotiation: a received message or a local decision.
type Event interface{ event() }

// Start makes a requester send its SSA in a request. The SSA's ID is the caller's.
type Start struct{ SSA *SSA }

// Receive hands over a message that Open has verified.
type Receive struct{ Env *Envelope }

// Propose makes a provider answer the request with a proposal (usually Meet's result).
type Propose struct{ SSA *SSA }

// Accept accepts the proposal (requester) or the peer's revision (either role).
type Accept struct{}

// Reject rejects the request (provider), the proposal (requester) or a revision.
type Reject struct{ Reasons []Reason }

// Cancel cancels the approved SSA, also while a revision of it is pending (the revision is
// dropped with it); in request-sent it withdraws the unanswered request: a cancellation
// carrying the request's SSA, which the provider confirms, and both sides end withdrawn.
type Cancel struct{}

// Revise proposes a new version of the approved SSA. The caller gives the new ID.
type Revise struct{ SSA *SSA }

// Abandon ends, locally, a request the peer can never receive (it does not speak the
// negotiation protocol, or refuses every connection): the requester goes from request-sent to
// failed and sends nothing. The peer never saw the request, so it holds nothing to end; were
// the request to reach it after all, its answer finds this side failed and is refused.
// Reasons say why (Output.Reasons repeats them for the driver to record). No message records
// it, so Restore rebuilds the negotiation in request-sent: the driver, which keeps the state,
// steps Abandon again.
type Abandon struct{ Reasons []Reason }

// Tick lets time pass: an unanswered request or proposal expires (the negotiation ends
// expired), an unanswered revision expires (it is dropped and the SSA in force stays). After Restore, it also sends an
// automatic answer that the transcript shows was owed but never made.
type Tick struct{}

func (Start) event()   {}
func (Receive) event() {}
func (Propose) event() {}
func (Accept) event()  {}
func (Reject) event()  {}
func (Cancel) event()  {}
func (Revise) event()  {}
func (Tick) event()    {}
func (Abandon) event() {}

// Output is what a step asks of its driver: persist Record (in order) first, then send Send.
type Output struct {
	// Record lists the messages this step added to the transcript.
	Record []*Envelope
	// Send is the message for the peer, if any.
	Send *Envelope
	// Agreement is set when the SSA in force changed: approved, revised or annulled. It
	// carries both signatures.
	Agreement *SSA
	// Reasons is set when the negotiation ended in a rejection, or was abandoned.
	Reasons []Reason
	// Duplicate is set when the event was a message already processed; Send then repeats
	// the original answer.
	Duplicate bool
	// Superseded is set when the event was the peer's cancellation or revision that crossed
	// one of ours on the network and gives way to it (see crossing): nothing changed and
	// nothing is recorded; the message is acknowledged and ours stands.
	Superseded bool
}

// Negotiation is the pure state machine of one SSA's negotiation and life, for one role. It
// does no I/O and reads no clock: every Step receives the time. It is not safe for
// concurrent use: one goroutine drives one negotiation.
type Negotiation struct {
	role       Role
	self       *Identity
	peer       peer.ID
	peerStr    string // peer.String(), cached by peerString
	id         []byte
	state      State
	transcript []*Envelope
	gaveWay    int // messages of ours in transcript that gave way in a crossing
	byID       map[string]int
	current    *Envelope // the message whose SSA is being negotiated or answered
	agreed     *SSA      // the SSA in force (or annulled), with both signatures
	// dropped is our revision that expired unanswered while it is the transcript's last
	// message: the peer's answer, made before the revision's validity limit, still counts.
	dropped *Envelope
	// undo is what the negotiation was before our last message, for a message of the peer
	// that crossed it and prevails (see crossing).
	undo view
}

// view is the part of a negotiation that decides how a message of the peer is taken.
type view struct {
	state            State
	current, dropped *Envelope
}

// NewRequester begins a negotiation as requester with provider, under negotiation ID nid
// (16 random bytes the caller draws).
func NewRequester(self *Identity, provider peer.ID, nid []byte) (*Negotiation, error) {
	if len(nid) != 16 {
		return nil, fmt.Errorf("protocol: negotiation ID must be 16 bytes, not %d", len(nid))
	}
	if provider == self.id {
		return nil, fmt.Errorf("protocol: cannot negotiate with oneself")
	}
	return &Negotiation{role: RoleRequester, self: self, peer: provider, id: bytes.Clone(nid), byID: map[string]int{}}, nil
}

// NewProvider begins a negotiation as provider; the first message received must be a request.
func NewProvider(self *Identity) *Negotiation {
	return &Negotiation{role: RoleProvider, self: self, byID: map[string]int{}}
}

// Restore rebuilds a negotiation from its transcript, as persisted, checking every message and
// every transition again. A transcript that ends with a received acceptance or cancellation
// whose automatic answer was never recorded leaves the negotiation owing it: the next Tick
// sends it. A transcript that does not begin with the request is refused (ErrUnexpected).
func Restore(self *Identity, role Role, transcript [][]byte) (*Negotiation, error) {
	n := &Negotiation{role: role, self: self, byID: map[string]int{}}
	for i, raw := range transcript {
		env, err := Open(raw)
		if err != nil {
			return nil, fmt.Errorf("protocol: restore message %d: %w", i, err)
		}
		if i == 0 {
			if env.Header.Type != MsgRequest {
				return nil, fmt.Errorf("protocol: restore message 0: %w: a transcript begins with a request, not a %s", ErrUnexpected, env.Header.Type)
			}
			n.id = env.Header.Negotiation
			if role == RoleRequester {
				n.peer = participantPeer(env.SSA.Participants.Provider)
			}
		}
		out := env.Sender == self.id
		var next State
		if out {
			var ok bool
			if next, ok = n.next(env.Header.Type, true); !ok {
				return nil, fmt.Errorf("protocol: restore message %d: %w: sending %s in %s", i, ErrUnexpected, env.Header.Type, n.state)
			}
		} else {
			var c crossed
			var v view
			if next, v, c, err = n.incoming(env); err == nil && c == oursPrevails {
				err = fmt.Errorf("%w: a superseded %s is never recorded", ErrBrokenChain, env.Header.Type)
			}
			if err != nil {
				return nil, fmt.Errorf("protocol: restore message %d: %w", i, err)
			}
			n.take(v)
		}
		n.apply(env, next)
	}
	return n, nil
}

// participantPeer parses a participant's peer ID; an unparsable one yields "".
func participantPeer(p Participant) peer.ID {
	id, err := peer.Decode(p.PeerID)
	if err != nil {
		return ""
	}
	return id
}

// peerString is the peer's ID as a string (empty before the peer is known).
func (n *Negotiation) peerString() string {
	if n.peerStr == "" && n.peer != "" {
		n.peerStr = n.peer.String()
	}
	return n.peerStr
}

// senderString is env's sender as a string.
func (n *Negotiation) senderString(env *Envelope) string {
	if env.Sender == n.peer {
		return n.peerString()
	}
	return env.Sender.String()
}

// Role is the negotiation's role.
func (n *Negotiation) Role() Role { return n.role }

// State is the negotiation's state.
func (n *Negotiation) State() State { return n.state }

// ID is the negotiation ID (nil for a provider before the request).
func (n *Negotiation) ID() []byte { return n.id }

// Peer is the other party (empty for a provider before the request).
func (n *Negotiation) Peer() peer.ID { return n.peer }

// Agreement is the SSA in force (or annulled), with both signatures, or nil.
func (n *Negotiation) Agreement() *SSA { return n.agreed }

// Pending is the SSA under negotiation: the request, proposal or revision being decided or
// answered, or nil.
func (n *Negotiation) Pending() *SSA {
	if n.current == nil {
		return nil
	}
	return n.current.SSA
}

// Transcript is every message of the negotiation, in order.
func (n *Negotiation) Transcript() []*Envelope { return n.transcript }

type edge struct {
	role  Role // 0: either
	state State
	typ   MsgType
	out   bool
}

// transitions is the whole protocol: (role, state, message, direction) -> next state. Any
// pair not here is refused with ErrUnexpected.
var transitions = map[edge]State{
	{RoleRequester, StateNew, MsgRequest, true}:                  StateRequestSent,
	{RoleRequester, StateRequestSent, MsgProposal, false}:        StateProposalReceived,
	{RoleRequester, StateRequestSent, MsgRejection, false}:       StateRejected,
	{RoleRequester, StateProposalReceived, MsgAcceptance, true}:  StateAcceptanceSent,
	{RoleRequester, StateProposalReceived, MsgRejection, true}:   StateRejected,
	{RoleRequester, StateAcceptanceSent, MsgConfirmation, false}: StateApproved,
	{RoleRequester, StateAcceptanceSent, MsgRejection, false}:    StateRejected,
	{RoleRequester, StateRequestSent, MsgCancellation, true}:     StateWithdrawalSent,
	{RoleRequester, StateWithdrawalSent, MsgConfirmation, false}: StateWithdrawn,
	{RoleRequester, StateExpired, MsgRejection, false}:           StateRejected,

	{RoleProvider, StateNew, MsgRequest, false}:                    StateRequestReceived,
	{RoleProvider, StateRequestReceived, MsgProposal, true}:        StateProposalSent,
	{RoleProvider, StateRequestReceived, MsgRejection, true}:       StateRejected,
	{RoleProvider, StateProposalSent, MsgAcceptance, false}:        StateAcceptanceReceived,
	{RoleProvider, StateProposalSent, MsgRejection, false}:         StateRejected,
	{RoleProvider, StateExpired, MsgAcceptance, false}:             StateAcceptanceReceived,
	{RoleProvider, StateExpired, MsgRejection, false}:              StateRejected,
	{RoleProvider, StateAcceptanceReceived, MsgConfirmation, true}: StateApproved,
	{RoleProvider, StateAcceptanceReceived, MsgRejection, true}:    StateRejected,
	{RoleProvider, StateRequestReceived, MsgCancellation, false}:   StateWithdrawalReceived,
	{RoleProvider, StateWithdrawalReceived, MsgConfirmation, true}: StateWithdrawn,
	{0, StateApproved, MsgCancellation, true}:                      StateCancellationSent,
	{0, StateApproved, MsgCancellation, false}:                     StateCancellationReceived,
	{0, StateCancellationSent, MsgConfirmation, false}:             StateAnnulled,
	{0, StateCancellationReceived, MsgConfirmation, true}:          StateAnnulled,
	{0, StateApproved, MsgRevision, true}:                          StateRevisionSent,
	{0, StateApproved, MsgRevision, false}:                         StateRevisionReceived,
	{0, StateRevisionSent, MsgConfirmation, false}:                 StateApproved,
	{0, StateRevisionSent, MsgRejection, false}:                    StateApproved,
	{0, StateRevisionReceived, MsgConfirmation, true}:              StateApproved,
	{0, StateRevisionReceived, MsgRejection, true}:                 StateApproved,
	{0, StateRevisionSent, MsgCancellation, true}:                  StateCancellationSent,
	{0, StateRevisionSent, MsgCancellation, false}:                 StateCancellationReceived,
	{0, StateRevisionReceived, MsgCancellation, true}:              StateCancellationSent,
	{0, StateRevisionReceived, MsgCancellation, false}:             StateCancellationReceived,
}

func (n *Negotiation) next(t MsgType, out bool) (State, bool) { return n.nextFrom(n.state, t, out) }

func (n *Negotiation) nextFrom(state State, t MsgType, out bool) (State, bool) {
	if s, ok := transitions[edge{n.role, state, t, out}]; ok {
		return s, true
	}
	s, ok := transitions[edge{0, state, t, out}]
	return s, ok
}

// view is how the negotiation stands now.
func (n *Negotiation) view() view {
	return view{state: n.state, current: n.current, dropped: n.dropped}
}

// take makes v how the negotiation stands, before a message of the peer that was checked
// against v is applied.
func (n *Negotiation) take(v view) { n.state, n.current, n.dropped = v.state, v.current, v.dropped }

// Step applies one event at time now.
func (n *Negotiation) Step(now time.Time, ev Event) (Output, error) {
	switch e := ev.(type) {
	case Receive:
		return n.receive(now, e.Env)
	case Tick:
		return n.tick(now)
	case Start:
		return n.start(now, e.SSA)
	case Propose:
		return n.propose(now, e.SSA)
	case Accept:
		return n.accept(now)
	case Reject:
		return n.reject(now, e.Reasons)
	case Cancel:
		return n.cancel(now)
	case Revise:
		return n.revise(now, e.SSA)
	case Abandon:
		return n.abandon(e.Reasons)
	}
	return Output{}, fmt.Errorf("protocol: unknown event %T", ev)
}

func (n *Negotiation) refuse(what string, env *Envelope) error {
	if env != nil {
		return fmt.Errorf("%w: %s: received %s in state %s", ErrUnexpected, n.role, env.Header.Type, n.state)
	}
	return fmt.Errorf("%w: %s: cannot %s in state %s", ErrUnexpected, n.role, what, n.state)
}

// send seals a message of ours, applies it and returns it for persisting and sending.
func (n *Negotiation) send(now time.Time, t MsgType, body any) (Output, error) {
	next, ok := n.next(t, true)
	if !ok {
		return Output{}, n.refuse("send a "+t.String(), nil)
	}
	if n.counted()+room(t) > MaxMessages {
		return Output{}, fmt.Errorf("%w: no room for a %s after %d messages", ErrTooManyMessages, t, n.counted())
	}
	h := Header{Type: t, Negotiation: n.id, ID: n.messageID(), Time: now.UnixMilli()}
	if k := len(n.transcript); k > 0 {
		h.Prev = n.transcript[k-1].Hash()
	}
	env, err := Seal(n.self, h, body)
	if err != nil {
		return Output{}, err
	}
	out := Output{Record: []*Envelope{env}, Send: env}
	n.finish(&out, env, next)
	return out, nil
}

// messageID derives a message ID unique to this negotiation, sender and position.
func (n *Negotiation) messageID() []byte {
	var buf [128]byte
	b := append(append(buf[:0], n.id...), n.self.id...)
	sum := sha256.Sum256(append(b, byte(len(n.transcript)>>8), byte(len(n.transcript))))
	return bytes.Clone(sum[:16])
}

func (n *Negotiation) finish(out *Output, env *Envelope, next State) {
	prevAgreed := n.agreed
	n.apply(env, next)
	if n.agreed != prevAgreed {
		out.Agreement = n.agreed
	}
	if env.Rejection != nil {
		out.Reasons = env.Rejection.Reasons
	}
}

// counted is how many messages of the transcript count towards MaxMessages.
func (n *Negotiation) counted() int { return len(n.transcript) - n.gaveWay }

// apply records a checked message and moves to the next state.
func (n *Negotiation) apply(env *Envelope, next State) {
	if k := len(n.transcript); k > 0 && !bytes.Equal(env.Header.Prev, n.transcript[k-1].Hash()) {
		n.gaveWay++ // env does not follow our last message: it takes its place (crossing)
	}
	n.byID[string(env.Header.ID)] = len(n.transcript)
	n.transcript = append(n.transcript, env)
	if n.id == nil {
		n.id = bytes.Clone(env.Header.Negotiation)
	}
	if n.peer == "" && env.Sender != n.self.id {
		n.peer = env.Sender
	}
	if env.Sender == n.self.id {
		n.undo = n.view()
	}
	n.dropped = nil
	switch env.Header.Type {
	case MsgConfirmation:
		if next == StateWithdrawn { // a withdrawal confirmed: nothing was ever agreed
			n.current = nil
			break
		}
		// The agreement: the answered message's signature, then the confirmation's.
		s := env.SSA.Clone()
		s.Signatures = [][]byte{n.current.detached(), env.detached()}
		n.agreed = s
		n.current = nil
	case MsgRejection:
		n.current = nil
	default:
		n.current = env
	}
	n.state = next
}
