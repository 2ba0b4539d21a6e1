package protocol

import (
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/veraison/go-cose"
)

// A provider's offers, signed for the directory (clause 6.2: the directory registers the
// metadata of the provider's information and validates an entity a requester already knows).
// A requester accepts a signed offer list only from the peer it describes and only while it
// is fresh.

var aadOffers = []byte("ssanet/v1 offers")

const ctOffers = "application/ssanet-offers+cbor"

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
	payload, err := marshal(&SignedOffers{Issued: FromTime(now), Expires: FromTime(now.Add(validity)), Offers: offers})
	if err != nil {
		return nil, err
	}
	msg := cose.Sign1Message{
		Headers: cose.Headers{Protected: cose.ProtectedHeader{
			cose.HeaderLabelAlgorithm:   cose.AlgorithmEdDSA,
			cose.HeaderLabelKeyID:       []byte(id.id),
			cose.HeaderLabelContentType: ctOffers,
		}},
		Payload: payload,
	}
	if err := msg.Sign(nil, aadOffers, id.signer); err != nil {
		return nil, fmt.Errorf("protocol: sign offers: %w", err)
	}
	return msg.MarshalCBOR()
}

// OpenOffers verifies a signed offer list: canonical, signed with the key inside from's peer
// ID (so a list signed by anyone else is refused), and fresh at now.
func OpenOffers(raw []byte, from peer.ID, now time.Time) ([]*Offer, error) {
	if len(raw) > MaxMessageSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(raw))
	}
	if len(raw) == 0 || raw[0] != 0xd2 {
		return nil, fmt.Errorf("%w: not a tagged COSE_Sign1", ErrMalformed)
	}
	var m sign1
	if err := unmarshalCanonical(raw[1:], &m); err != nil {
		return nil, err
	}
	var ph struct {
		Alg int64  `cbor:"1,keyasint"`
		CT  string `cbor:"3,keyasint"`
		KID []byte `cbor:"4,keyasint"`
	}
	if err := unmarshalCanonical(m.Protected, &ph); err != nil {
		return nil, fmt.Errorf("offers protected header: %w", err)
	}
	if ph.CT != ctOffers || len(m.Unprotected) != 0 {
		return nil, fmt.Errorf("%w: not a signed offer list", ErrMalformed)
	}
	kid, err := peer.IDFromBytes(ph.KID)
	if err != nil {
		return nil, fmt.Errorf("%w: kid: %v", ErrMalformed, err)
	}
	if kid != from {
		return nil, fmt.Errorf("%w: offers signed by %s, fetched from %s", ErrBadSignature, kid, from)
	}
	if err := verifySign1(m.Protected, m.Payload, m.Signature, aadOffers, kid); err != nil {
		return nil, err
	}
	var so SignedOffers
	if err := unmarshalCanonical(m.Payload, &so); err != nil {
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
