package agent

import (
	"fmt"
	"sync"

	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// maxOpenPerPeer bounds the negotiations a peer can have open with this agent (waiting for
// either side, or for a message to be acknowledged), so that one peer's requests cannot fill
// the memory and the store: an open negotiation stays in memory. A peer refused for it sends
// its request again later, like any request not answered.
const maxOpenPerPeer = 256

// admission is the provider's per-peer admission: it bounds what one requester holds of this
// agent, its open negotiations (maxOpenPerPeer) and its places, the SSAs in force or proposed
// (Config.MaxAgreementsPerPeer).
//
// Contract: the counts follow the stored states. track(rec) counts rec as its committed state
// says, and is called after every commit and rollback and for each negotiation at start, so
// the bounds hold across restarts. A bound is checked and the slot taken in one locked step
// (admit for a new negotiation before its first commit, takePlace before a proposal is
// committed), so that requests on parallel streams cannot pass a bound together; the next
// track of the same negotiation keeps the slot or gives it back. Requester-side negotiations
// are never counted. Safe for concurrent use; it calls nothing while it holds its lock.
type admission struct {
	maxPlaces int

	mu     sync.Mutex
	open   tally
	places tally
}

func newAdmission(maxPlaces int) *admission {
	return &admission{maxPlaces: maxPlaces, open: newTally(), places: newTally()}
}

// track counts rec among its peer's open negotiations and among the places it holds, or
// not, as its state says.
func (ad *admission) track(rec *storage.Negotiation) {
	provider := rec.Role == protocol.RoleProvider
	ad.mu.Lock()
	defer ad.mu.Unlock()
	ad.open.set(string(rec.ID), rec.Peer, provider && rec.State != protocol.StateNew &&
		!(atRest(rec.State) && rec.Delivered))
	ad.places.set(string(rec.ID), rec.Peer, provider && holdsPlace(rec.State))
}

// admit counts the new negotiation id from requester among its open ones, from now on and not
// from its first commit, or returns ErrTooManyOpen when the requester has too many open. A
// negotiation admitted and never stored is uncounted by the track of its record as new.
func (ad *admission) admit(id, requester string) error {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	if ad.open.per[requester] >= maxOpenPerPeer {
		return fmt.Errorf("%w: %d waiting; request again when some have ended", ErrTooManyOpen, maxOpenPerPeer)
	}
	ad.open.set(id, requester, true)
	return nil
}

// takePlace gives negotiation id, about to propose, one of its requester's places, or returns
// the rejection when the requester holds them all.
func (ad *admission) takePlace(id, requester string) *protocol.Reject {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	if _, ok := ad.places.of[id]; ok {
		return nil
	}
	if held, limit := ad.places.per[requester], ad.maxPlaces; held >= limit {
		return &protocol.Reject{Reasons: []protocol.Reason{{Code: protocol.CodeAgreementLimit, Component: "agreements",
			Provider: fmt.Sprint(limit), Requester: fmt.Sprint(held + 1),
			Text: fmt.Sprintf("you hold %d SSAs with this provider, in force or proposed, as many as it allows a peer (max-agreements-per-peer): cancel one you no longer need, then request again", held)}}}
	}
	ad.places.set(id, requester, true)
	return nil
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

// tally counts negotiations by requester: of holds the requester of each negotiation
// counted, per how many each requester has.
type tally struct {
	of  map[string]string
	per map[string]int
}

func newTally() tally { return tally{of: map[string]string{}, per: map[string]int{}} }

// set counts negotiation id as requester's, or not.
func (t tally) set(id, requester string, in bool) {
	if p, was := t.of[id]; was {
		if t.per[p]--; t.per[p] == 0 {
			delete(t.per, p)
		}
		delete(t.of, id)
	}
	if in {
		t.of[id] = requester
		t.per[requester]++
	}
}
