package protocol

import (
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Signed documents other than negotiation messages (offer lists, record batches, fulfilment
// reports) share one form: a tagged COSE_Sign1 whose protected header holds the algorithm,
// the signer's peer ID as kid and a content type, with a domain-separation string per kind of
// document as external AAD, so that no signature can pass for another kind. They are signed
// by Identity.sign and verified by verifySign1, as negotiation messages are.

type docKind struct {
	contentType string
	aad         []byte
}

var (
	docOffers = docKind{"application/ssanet-offers+cbor", []byte("ssanet/v1 offers")}
	docBatch  = docKind{"application/ssanet-batch+cbor", []byte("ssanet/v1 record batch")}
	docReport = docKind{"application/ssanet-report+cbor", []byte("ssanet/v1 fulfilment report")}
)

// sealDoc signs the canonical encoding of v as a document of kind k.
func sealDoc(id *Identity, k docKind, v any) ([]byte, error) {
	payload, err := Marshal(v)
	if err != nil {
		return nil, err
	}
	protected, sig := id.sign(k.contentType, nil, k.aad, payload)
	return appendSign1(nil, protected, payload, sig), nil
}

// openDoc verifies a document of kind k signed by from and decodes its payload into v.
func openDoc(raw []byte, from peer.ID, k docKind, v any) error {
	if len(raw) > MaxMessageSize {
		return fmt.Errorf("%w: %d bytes", ErrTooLarge, len(raw))
	}
	if len(raw) == 0 || raw[0] != 0xd2 {
		return fmt.Errorf("%w: not a tagged COSE_Sign1", ErrMalformed)
	}
	var m sign1
	if err := unmarshalCanonical(raw[1:], &m); err != nil {
		return err
	}
	var ph struct {
		Alg int64  `cbor:"1,keyasint"`
		CT  string `cbor:"3,keyasint"`
		KID []byte `cbor:"4,keyasint"`
	}
	if err := unmarshalCanonical(m.Protected, &ph); err != nil {
		return fmt.Errorf("protected header: %w", err)
	}
	if ph.CT != k.contentType || len(m.Unprotected) != 0 {
		return fmt.Errorf("%w: not a %s", ErrMalformed, k.contentType)
	}
	kid, err := peer.IDFromBytes(ph.KID)
	if err != nil {
		return fmt.Errorf("%w: kid: %v", ErrMalformed, err)
	}
	if kid != from {
		return fmt.Errorf("%w: signed by %s, expected %s", ErrBadSignature, kid, from)
	}
	if err := verifySign1(m.Protected, m.Payload, m.Signature, k.aad, kid); err != nil {
		return err
	}
	return unmarshalCanonical(m.Payload, v)
}
