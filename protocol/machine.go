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
	StateExpired                    // the proposal's validity passed unanswered
)

var stateNames = [...]string{"new", "request-sent", "request-received", "proposal-sent", "proposal-received",
	"acceptance-sent", "acceptance-received", "approved", "cancellation-sent", "cancellation-received",
	"revision-sent", "revision-received", "rejected", "annulled", "expired"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// MarshalText writes the state's name.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

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

// Cancel cancels the approved SSA.
type Cancel struct{}

// Revise proposes a new version of the approved SSA. The caller gives the new ID.
type Revise struct{ SSA *SSA }

// Tick lets time pass: an unanswered proposal expires. After Restore, it also sends an
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

// Output is what a step asks of its driver: persist Record (in order) first, then send Send.
type Output struct {
	// Record lists the messages this step added to the transcript.
	Record []*Envelope
	// Send is the message for the peer, if any.
	Send *Envelope
	// Agreement is set when the SSA in force changed: approved, revised or annulled. It
	// carries both signatures.
	Agreement *SSA
	// Reasons is set when the negotiation ended in a rejection.
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
			if next, c, err = n.incoming(env); err == nil && c == oursPrevails {
				err = fmt.Errorf("%w: a superseded %s is never recorded", ErrBrokenChain, env.Header.Type)
			}
			if err != nil {
				return nil, fmt.Errorf("protocol: restore message %d: %w", i, err)
			}
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

	{RoleProvider, StateNew, MsgRequest, false}:                    StateRequestReceived,
	{RoleProvider, StateRequestReceived, MsgProposal, true}:        StateProposalSent,
	{RoleProvider, StateRequestReceived, MsgRejection, true}:       StateRejected,
	{RoleProvider, StateProposalSent, MsgAcceptance, false}:        StateAcceptanceReceived,
	{RoleProvider, StateProposalSent, MsgRejection, false}:         StateRejected,
	{RoleProvider, StateExpired, MsgAcceptance, false}:             StateAcceptanceReceived,
	{RoleProvider, StateExpired, MsgRejection, false}:              StateRejected,
	{RoleProvider, StateAcceptanceReceived, MsgConfirmation, true}: StateApproved,
	{RoleProvider, StateAcceptanceReceived, MsgRejection, true}:    StateRejected,
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
}

func (n *Negotiation) next(t MsgType, out bool) (State, bool) { return n.nextFrom(n.state, t, out) }

func (n *Negotiation) nextFrom(state State, t MsgType, out bool) (State, bool) {
	if s, ok := transitions[edge{n.role, state, t, out}]; ok {
		return s, true
	}
	s, ok := transitions[edge{0, state, t, out}]
	return s, ok
}

// Step applies one event at time now.
func (n *Negotiation) Step(now time.Time, ev Event) (Output, error) {
	switch e := ev.(type) {
	case Receive:
		return n.receive(now, e.Env)
	case Tick:
		switch {
		case (n.state == StateProposalSent || n.state == StateProposalReceived) && n.expired(now):
			n.state = StateExpired
		case n.state == StateAcceptanceReceived || n.state == StateCancellationReceived:
			// Only Restore leaves a negotiation here, when the transcript was persisted
			// between a received message and its automatic answer: send the answer now.
			return n.answer(now, n.current)
		}
		return Output{}, nil
	case Start:
		if n.role != RoleRequester || n.state != StateNew {
			return Output{}, n.refuse("start", nil)
		}
		s := e.SSA.Clone()
		s.Status, s.Signatures = StatusProposal, nil
		s.Participants.Requester.PeerID = n.self.str
		s.Participants.Provider.PeerID = n.peerString()
		if err := CheckSSAID(s.ID); err != nil {
			return Output{}, fmt.Errorf("%w: a request needs an SSA ID: %w", ErrInvalidSSA, err)
		}
		return n.send(now, MsgRequest, s)
	case Propose:
		if n.state != StateRequestReceived {
			return Output{}, n.refuse("propose", nil)
		}
		s := e.SSA.Clone()
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
	case Accept:
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
	case Reject:
		if !n.state.AwaitsDecision() {
			return Output{}, n.refuse("reject", nil)
		}
		return n.send(now, MsgRejection, &Rejection{SSAID: n.current.SSA.ID, Reasons: e.Reasons})
	case Cancel:
		if n.state != StateApproved {
			return Output{}, n.refuse("cancel", nil)
		}
		s := n.agreed.Clone()
		s.Status, s.Signatures = StatusAnnulment, nil
		return n.send(now, MsgCancellation, s)
	case Revise:
		if n.state != StateApproved {
			return Output{}, n.refuse("revise", nil)
		}
		s := e.SSA.Clone()
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
	return Output{}, fmt.Errorf("protocol: unknown event %T", ev)
}

func (n *Negotiation) refuse(what string, env *Envelope) error {
	if env != nil {
		return fmt.Errorf("%w: %s: received %s in state %s", ErrUnexpected, n.role, env.Header.Type, n.state)
	}
	return fmt.Errorf("%w: %s: cannot %s in state %s", ErrUnexpected, n.role, what, n.state)
}

func (n *Negotiation) expired(now time.Time) bool {
	exp := n.current.SSA.Expires
	return exp != 0 && !now.Before(exp.Std())
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
	next, c, err := n.incoming(env)
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
	case StateCancellationReceived:
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

// incoming checks a message from the peer and returns the state it leads to. A cancellation
// or revision that crossed one of ours (see crossing) is settled there: if ours prevails, the
// message changes nothing; if theirs does, it is taken as if ours had not been sent.
func (n *Negotiation) incoming(env *Envelope) (next State, c crossed, err error) {
	state := n.state
	switch c = n.crossing(env); c {
	case oursPrevails:
		return 0, c, n.checkOrigin(env)
	case theirsPrevails:
		state = StateApproved // a cancellation or revision is sent from approved only
	}
	var prev []byte
	if i := n.follows(c); i >= 0 {
		prev = n.transcript[i].Hash()
	}
	next, err = n.checkIncoming(env, state, prev)
	return next, c, err
}

// follows is the position in the transcript of the message a message of the peer follows:
// the last one, or the one before ours when ours gives way to it; -1 for the first message.
func (n *Negotiation) follows(c crossed) int {
	if c == theirsPrevails {
		return len(n.transcript) - 2
	}
	return len(n.transcript) - 1
}

// counted is how many messages of the transcript count towards MaxMessages.
func (n *Negotiation) counted() int { return len(n.transcript) - n.gaveWay }

// crossed is how a message of the peer meets one of ours.
type crossed int

const (
	notCrossed crossed = iota
	oursPrevails
	theirsPrevails
)

// crossing tells whether env, a cancellation or revision of the peer, crossed one of ours on
// the network: both name the same previous message, so neither side saw the other's before
// sending its own. Without a rule both would refuse what they receive and send theirs again
// forever. The rule, the same on both sides: a cancellation prevails over a revision (ending
// the SSA is what one party wants either way); between two of a kind, the provider's
// prevails. The side whose message gives way takes the other's in its place (its own stays
// in its transcript, answered by nothing); the side whose message prevails acknowledges the
// other's, records nothing, and waits for the answer to its own.
func (n *Negotiation) crossing(env *Envelope) crossed {
	theirs := env.Header.Type
	if (theirs != MsgCancellation && theirs != MsgRevision) || len(env.Header.Prev) == 0 {
		return notCrossed
	}
	for i := len(n.transcript) - 1; i >= 0; i-- {
		own := n.transcript[i]
		if own.Sender != n.self.id || !bytes.Equal(own.Header.Prev, env.Header.Prev) {
			continue
		}
		ours := own.Header.Type
		switch {
		case ours != MsgCancellation && ours != MsgRevision:
			return notCrossed
		case ours == MsgCancellation && theirs == MsgRevision, ours == theirs && n.role == RoleProvider:
			return oursPrevails
		case i == len(n.transcript)-1: // ours is still unanswered: theirs takes its place
			return theirsPrevails
		}
		return notCrossed
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
func (n *Negotiation) checkIncoming(env *Envelope, state State, prev []byte) (State, error) {
	if err := n.checkOrigin(env); err != nil {
		return 0, err
	}
	if !bytes.Equal(env.Header.Prev, prev) {
		return 0, fmt.Errorf("%w: %s names previous message %x, last is %x", ErrBrokenChain, env.Header.Type, env.Header.Prev, prev)
	}
	next, ok := n.nextFrom(state, env.Header.Type, false)
	if !ok {
		return 0, n.refuse("", env)
	}
	return next, n.checkTerms(env)
}

// checkTerms checks that a message from the peer carries the terms its type requires.
func (n *Negotiation) checkTerms(env *Envelope) error {
	s := env.SSA
	switch env.Header.Type {
	case MsgRequest:
		if s.Status != StatusProposal || s.ID == "" {
			return fmt.Errorf("%w: a request carries a proposal-status SSA with an ID", ErrTermsChanged)
		}
		if s.Participants.Requester.PeerID != n.senderString(env) {
			return fmt.Errorf("%w: the request's requester is %q, the sender %s", ErrWrongSender, s.Participants.Requester.PeerID, env.Sender)
		}
		if p := s.Participants.Provider.PeerID; p != "" && p != n.self.str {
			return fmt.Errorf("%w: the request names provider %s, this agent is %s", ErrWrongSender, p, n.self.id)
		}
	case MsgProposal:
		req := n.current.SSA
		if s.Status != StatusProposal || s.ID != req.ID || s.Participants.Requester != req.Participants.Requester ||
			s.Participants.Provider.PeerID != n.senderString(env) {
			return fmt.Errorf("%w: a proposal keeps the request's ID and requester and names its sender as provider", ErrTermsChanged)
		}
	case MsgAcceptance:
		want := *n.proposal() // a shallow copy: only its own scalar fields change
		want.Status, want.Date = StatusApproval, s.Date
		if err := sameTerms(&want, env); err != nil {
			return err
		}
	case MsgConfirmation:
		if !bytes.Equal(env.Payload(), n.current.Payload()) {
			return fmt.Errorf("%w: the confirmation's SSA differs from the %s it confirms", ErrTermsChanged, n.current.Header.Type)
		}
	case MsgCancellation:
		want := *n.agreed
		want.Status = StatusAnnulment
		if err := sameTerms(&want, env); err != nil {
			return err
		}
	case MsgRevision:
		a := n.agreed
		if s.Status != StatusApproval || s.ID == "" || s.ID == a.ID || s.Supersedes != a.ID || s.Version != a.Version+1 || s.Participants != a.Participants {
			return fmt.Errorf("%w: a revision supersedes the SSA in force with the next version, a new ID and the same participants", ErrTermsChanged)
		}
	case MsgRejection:
		if n.current == nil || env.Rejection.SSAID != n.current.SSA.ID {
			return fmt.Errorf("%w: the rejection names SSA %q", ErrTermsChanged, env.Rejection.SSAID)
		}
	}
	return nil
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
	switch env.Header.Type {
	case MsgConfirmation:
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
