package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ssanet/ssanet/discovery"
	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// The operator's API of an agent: what the control API serves and `ssanet demo` calls, so
// that both do the same (an offer added by either gets the same contact and advertisement).
// Request, Decide, Cancel and Revise (negotiate.go), Ingest, Records and Monitor belong to it
// too.

// ErrInvalid marks an error that is the caller's: a template or offer that does not parse, or
// names what the agent cannot do. Its message is the underlying error's.
var ErrInvalid = errors.New("agent: invalid input")

// kindError is err classed as kind for errors.Is, with err's message alone.
type kindError struct{ kind, err error }

func (e kindError) Error() string   { return e.err.Error() }
func (e kindError) Unwrap() []error { return []error{e.kind, e.err} }

func invalid(err error) error { return kindError{ErrInvalid, err} }

// NegotiationView is a negotiation as the control API shows it.
type NegotiationView struct {
	SSAID string `json:"ssa_id"`
	Role  string `json:"role"`
	State string `json:"state"`
	// AtRest says that the negotiation waits for nothing from its peer: it is over, in force,
	// or held for this agent's operator. A client waits for it before it shows an outcome.
	AtRest    bool              `json:"at_rest"`
	Peer      string            `json:"peer"`
	Offer     string            `json:"offer,omitempty"`
	Note      string            `json:"note,omitempty"`
	Reasons   []protocol.Reason `json:"reasons,omitempty"`
	Delivered bool              `json:"delivered"`
	// Phase is the SSA's place in the life cycle of clause 9.1.
	Phase Phase `json:"phase"`
	// Attempt, when a message of ours waits for the peer's acknowledgement, says when it is
	// sent again and why the last attempt failed.
	Attempt *Attempt  `json:"attempt,omitempty"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	// SSA is the agreement in force (or annulled), else the SSA under negotiation.
	SSA *protocol.SSA `json:"ssa,omitempty"`
	// Versions lists every agreed version's ID, oldest first, when there are several.
	Versions []string `json:"versions,omitempty"`
}

// MessageView is one message of a transcript.
type MessageView struct {
	Type   string `json:"type"`
	Sender string `json:"sender"`
	Time   string `json:"time"`
	ID     string `json:"id"`
	Prev   string `json:"prev,omitempty"`
	Hash   string `json:"hash"`
	SSAID  string `json:"ssa_id,omitempty"`
	Status string `json:"status,omitempty"`
	// Reasons are a rejection's reasons.
	Reasons []protocol.Reason `json:"reasons,omitempty"`
}

// Offers lists the agent's offers; none is an empty list.
func (a *Agent) Offers() ([]*protocol.Offer, error) {
	offers, err := a.store.Offers()
	if offers == nil {
		offers = []*protocol.Offer{}
	}
	return offers, err
}

// AddOffer takes an offer written in YAML: it checks that the agent holds the masking keys the
// offer names, makes this agent its provider (with the configured contact where the offer
// names none), stores it and advertises the agent's offers again. An offer that does not
// parse or names a key the agent lacks is ErrInvalid.
func (a *Agent) AddOffer(yaml []byte) (*protocol.Offer, error) {
	o, err := protocol.ParseOfferYAML(yaml, a.neg.now())
	if err != nil {
		return nil, invalid(err)
	}
	if err := a.checkOfferKeys(o); err != nil {
		return nil, invalid(err)
	}
	a.neg.signAs(&o.Terms.Participants.Provider, "provider", "offer", o.ID)
	o.Terms.Participants.Provider.PeerID = a.ID().String()
	if err := a.store.PutOffer(o); err != nil {
		return nil, err
	}
	a.dir.Readvertise()
	return o, nil
}

// RemoveOffer deletes an offer and advertises the agent's offers again.
func (a *Agent) RemoveOffer(id string) error {
	if err := a.store.DeleteOffer(id); err != nil {
		return err
	}
	a.dir.Readvertise()
	return nil
}

// Discover finds the providers that advertise information of a type (and format, if not
// empty) in the directory; none is an empty list.
func (a *Agent) Discover(ctx context.Context, typ, format string) ([]discovery.Provider, error) {
	ps, err := a.dir.Find(overRelays(ctx), typ, format)
	if ps == nil {
		ps = []discovery.Provider{}
	}
	return ps, err
}

// DiscoverPeer finds a peer's addresses and offers in the directory.
func (a *Agent) DiscoverPeer(ctx context.Context, p peer.ID) (discovery.Provider, error) {
	return a.dir.Peer(overRelays(ctx), p)
}

// ParseTemplate reads an SSA template written in YAML, for Request or Revise (ReviseTemplate
// merges a partial one over the SSA in force). One that does not parse is ErrInvalid.
func (a *Agent) ParseTemplate(yaml []byte) (*protocol.SSA, error) {
	s, err := protocol.ParseSSAYAML(yaml, a.neg.now())
	if err != nil {
		return nil, invalid(err)
	}
	return s, nil
}

// Negotiations lists every negotiation of the agent; none is an empty list.
func (a *Agent) Negotiations() ([]*NegotiationView, error) {
	recs, err := a.store.Negotiations()
	if err != nil {
		return nil, err
	}
	out := []*NegotiationView{}
	for _, rec := range recs {
		v, err := a.view(rec)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// ShowNegotiation is the negotiation of an SSA (any version's ID).
func (a *Agent) ShowNegotiation(ssaID string) (*NegotiationView, error) {
	return a.viewOf(a.Negotiation(ssaID))
}

// Transcript lists the messages of the negotiation of an SSA, oldest first.
func (a *Agent) Transcript(ssaID string) ([]MessageView, error) {
	raw, err := a.rawTranscript(ssaID)
	if err != nil {
		return nil, err
	}
	out := []MessageView{}
	for _, b := range raw {
		e, err := protocol.Open(b)
		if err != nil {
			return nil, fmt.Errorf("%w: transcript of %s: %v", storage.ErrCorrupt, ssaID, err)
		}
		out = append(out, messageView(e))
	}
	return out, nil
}

// Export is an agreed SSA (approved or annulled), signed by both parties, in canonical CBOR.
// An SSA not agreed is storage.ErrNotFound.
func (a *Agent) Export(ssaID string) ([]byte, error) {
	s, err := a.store.Agreement(ssaID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, kindError{storage.ErrNotFound,
			fmt.Errorf("SSA %s has not been agreed (only approved or annulled SSAs carry both signatures)", ssaID)}
	}
	if err != nil {
		return nil, err
	}
	return s.Encode()
}

// Sinks is the state of every sink: per SSA its position and lag, its errors and its last
// success.
func (a *Agent) Sinks() ([]SinkState, error) { return a.sinks.states() }

// Inbox is what the agent holds of the records delivered for an SSA it requested.
func (a *Agent) Inbox(ssaID string) (InboxView, error) {
	in, err := a.store.InboxState(ssaID)
	return InboxView{Last: in.Last, Stored: in.Stored, Deleted: in.Deleted, Violations: in.Violations}, err
}

func messageView(e *protocol.Envelope) MessageView {
	v := MessageView{Type: e.Header.Type.String(), Sender: e.Sender.String(),
		Time: time.UnixMilli(e.Header.Time).UTC().Format(time.RFC3339Nano),
		ID:   fmt.Sprintf("%x", e.Header.ID), Prev: fmt.Sprintf("%x", e.Header.Prev), Hash: fmt.Sprintf("%x", e.Hash())}
	if e.SSA != nil {
		v.SSAID, v.Status = e.SSA.ID, e.SSA.Status.String()
	}
	if e.Rejection != nil {
		v.SSAID, v.Reasons = e.Rejection.SSAID, e.Rejection.Reasons
	}
	return v
}

// viewOf is the view of what an operation on a negotiation returned.
func (a *Agent) viewOf(rec *storage.Negotiation, err error) (*NegotiationView, error) {
	if err != nil {
		return nil, err
	}
	return a.view(rec)
}

// view builds the API view of a negotiation.
func (a *Agent) view(rec *storage.Negotiation) (*NegotiationView, error) {
	v := &NegotiationView{SSAID: rec.SSAID, Role: rec.Role.String(), State: rec.State.String(), AtRest: settled(rec.State),
		Peer: rec.Peer, Offer: rec.OfferID, Note: rec.Note, Reasons: rec.Reasons, Delivered: rec.Delivered,
		Created: rec.Created, Updated: rec.Updated}
	s, err := a.store.Agreement(rec.SSAID)
	switch {
	case err == nil:
		v.SSA = s
		if v.Versions, err = a.versions(s); err != nil {
			return nil, err
		}
	case errors.Is(err, storage.ErrNotFound):
		if v.SSA, err = a.lastProposed(rec); err != nil {
			return nil, err
		}
	default:
		return nil, err
	}
	v.Phase = phase(v.SSA, rec.State, a.neg.now())
	if !rec.Delivered {
		v.Attempt = a.neg.attempt(rec.ID)
	}
	return v, nil
}

// versions lists the IDs of every agreed version up to s, oldest first; none if s is the
// first.
func (a *Agent) versions(s *protocol.SSA) ([]string, error) {
	var ids []string
	for p := s; p.Supersedes != ""; {
		ids = append([]string{p.Supersedes}, ids...)
		var err error
		if p, err = a.store.Agreement(p.Supersedes); err != nil {
			return nil, err
		}
	}
	if len(ids) > 0 {
		ids = append(ids, s.ID)
	}
	return ids, nil
}

// lastProposed is the last SSA of a negotiation's transcript, the one under negotiation.
func (a *Agent) lastProposed(rec *storage.Negotiation) (*protocol.SSA, error) {
	raw, err := a.store.Transcript(rec.ID)
	if err != nil {
		return nil, err
	}
	for i := len(raw) - 1; i >= 0; i-- {
		e, err := protocol.Open(raw[i])
		if err != nil {
			return nil, fmt.Errorf("%w: %v", storage.ErrCorrupt, err)
		}
		if e.SSA != nil {
			return e.SSA, nil
		}
	}
	return nil, nil
}

// settled reports whether a negotiation in state st waits for nothing from its peer.
func settled(st protocol.State) bool {
	return st == protocol.StateApproved || st.Ended() || st.AwaitsDecision()
}
