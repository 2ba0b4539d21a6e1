package protocol

import (
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// A provider's offers, signed for the directory (clause 6.2: the directory registers the
// metadata of the provider's information and validates an entity a requester already knows).
// A requester accepts a signed offer list only from the peer it describes and only while it
// is fresh.

// ErrStaleOffers means a signed offer list is not valid at the time it is read.
var ErrStaleOffers = errors.New("protocol: offer list is stale")

// SignedOffers is the payload of a signed offer list.
type SignedOffers struct {
	Issued  Time     `cbor:"1,keyasint"`
	Expires Time     `cbor:"2,keyasint"`
	Offers  []*Offer `cbor:"3,keyasint"`
}

// SealOffers signs the offers of id, valid from now for validity.
func SealOffers(id *Identity, offers []*Offer, now time.Time, validity time.Duration) ([]byte, error) {
	return sealDoc(id, docOffers, &SignedOffers{Issued: FromTime(now), Expires: FromTime(now.Add(validity)), Offers: offers})
}

// OpenOffers verifies a signed offer list: canonical, signed with the key inside from's peer
// ID (so a list signed by anyone else is refused), and fresh at now.
func OpenOffers(raw []byte, from peer.ID, now time.Time) ([]*Offer, error) {
	var so SignedOffers
	if err := openDoc(raw, from, docOffers, &so); err != nil {
		return nil, err
	}
	t := FromTime(now)
	if so.Issued > t+Time(MaxSkew/time.Second) || so.Expires <= t {
		return nil, fmt.Errorf("%w: issued %s, expires %s", ErrStaleOffers, so.Issued, so.Expires)
	}
	for _, o := range so.Offers {
		if err := o.Validate(); err != nil {
			return nil, err
		}
		if o.Terms.Participants.Provider.PeerID != from.String() {
			return nil, fmt.Errorf("%w: offer %s names provider %s", ErrBadSignature, o.ID, o.Terms.Participants.Provider.PeerID)
		}
	}
	return so.Offers, nil
}
