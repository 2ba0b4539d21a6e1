package protocol

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// COSE_Sign1 (RFC 9052) as ssanet writes and reads it: EdDSA, a protected header of
// algorithm, content type, kid (the signer's peer ID) and, for a negotiation message, its
// Header; an empty unprotected header; the signer's key read from the kid itself.

var (
	// ErrBadSignature means a signature does not verify, or was not made by the key it names.
	ErrBadSignature = errors.New("protocol: bad signature")
	// ErrUnsupportedKey means a peer ID does not embed an Ed25519 public key.
	ErrUnsupportedKey = errors.New("protocol: peer ID does not embed an Ed25519 key")
)

// Identity is an agent's signing key and the peer ID derived from it.
type Identity struct {
	id   peer.ID
	str  string // id.String(), which is slow (base58), computed once
	priv ed25519.PrivateKey
}

// NewIdentity wraps a libp2p Ed25519 private key.
func NewIdentity(k crypto.PrivKey) (*Identity, error) {
	if k.Type() != pb.KeyType_Ed25519 {
		return nil, fmt.Errorf("%w: key type %s", ErrUnsupportedKey, k.Type())
	}
	raw, err := k.Raw()
	if err != nil {
		return nil, fmt.Errorf("protocol: read private key: %w", err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("protocol: peer ID: %w", err)
	}
	return &Identity{id: id, str: id.String(), priv: ed25519.PrivateKey(raw)}, nil
}

// PeerID is the identity's peer ID.
func (i *Identity) PeerID() peer.ID { return i.id }

type sign1 struct {
	_           struct{} `cbor:",toarray"`
	Protected   []byte
	Unprotected map[int64]any
	Payload     []byte
	Signature   []byte
}

// sign makes the protected header of a COSE_Sign1 (RFC 9052 §4.4) by id, with content type ct
// and, for a negotiation message, its encoded Header head, and signs it with payload and the
// domain-separation string aad. It is the one signing path of every signed document: go-cose
// serves only as an independent check in the tests (cose_test.go).
func (id *Identity) sign(ct string, head, aad, payload []byte) (protected, sig []byte) {
	protected = appendProtected(nil, ct, []byte(id.id), head)
	var buf [2048]byte // the Sig_structure of a usual message fits: no allocation
	return protected, ed25519.Sign(id.priv, sigStructure(buf[:0], protected, aad, payload))
}

// algEdDSA is the COSE algorithm identifier of EdDSA (RFC 9053 §2.2).
const algEdDSA = -8

// protectedHeader is the protected header of every ssanet COSE_Sign1: algorithm, content
// type, kid (the signer's peer ID) and, for negotiation messages, the message Header.
type protectedHeader struct {
	Alg  int64  `cbor:"1,keyasint"`
	CT   string `cbor:"3,keyasint"`
	KID  []byte `cbor:"4,keyasint"`
	Head []byte `cbor:"-65537,keyasint,omitempty"`
}

// appendProtected appends the canonical encoding of an ssanet protected header, with keys in
// core deterministic order: 1 (alg), 3 (content type), 4 (kid) and, unless head is nil (a
// document other than a negotiation message), -65537 (message header).
func appendProtected(b []byte, ct string, kid, head []byte) []byte {
	b = slices.Grow(b, 24+len(ct)+len(kid)+len(head))
	n := byte(0xa4) // map of 4
	if head == nil {
		n = 0xa3
	}
	b = append(b, n, 0x01, 0x27, 0x03) // alg: -8 (EdDSA); content type:
	b = append(appendHead(b, 3, uint64(len(ct))), ct...)
	b = appendBstr(append(b, 0x04), kid)
	if head == nil {
		return b
	}
	b = append(b, 0x3a, 0x00, 0x01, 0x00, 0x00) // -65537
	return appendBstr(b, head)
}

// parseProtected reads a protected header written by appendProtected. It reports false for
// anything else, which decodeSign1 then reads with the strict decoder.
func parseProtected(b []byte) (ct string, kid, head []byte, ok bool) {
	if len(b) < 4 || b[0] != 0xa4 || b[1] != 0x01 || b[2] != 0x27 || b[3] != 0x03 {
		return "", nil, nil, false
	}
	ctb, b, err := readString(b[4:], 3)
	if err != nil || !utf8.Valid(ctb) || len(b) == 0 || b[0] != 0x04 {
		return "", nil, nil, false
	}
	if kid, b, err = readString(b[1:], 2); err != nil || !bytes.HasPrefix(b, []byte{0x3a, 0x00, 0x01, 0x00, 0x00}) {
		return "", nil, nil, false
	}
	if head, b, err = readString(b[5:], 2); err != nil || len(head) == 0 || len(b) != 0 {
		return "", nil, nil, false
	}
	return string(ctb), kid, head, true
}

// sigStructure is the COSE Sig_structure of a COSE_Sign1 (RFC 9052 §4.4), in canonical CBOR:
// ["Signature1", protected, external_aad, payload]. It is what is signed and verified.
func sigStructure(b, protected, aad, payload []byte) []byte {
	b = slices.Grow(b, 32+len(protected)+len(aad)+len(payload))
	b = append(b, 0x84, 0x6a)
	b = append(b, "Signature1"...)
	b = appendBstr(b, protected)
	b = appendBstr(b, aad)
	return appendBstr(b, payload)
}

// appendSign1 appends a tagged COSE_Sign1 with an empty unprotected header; a nil payload is
// detached (CBOR null).
func appendSign1(b, protected, payload, sig []byte) []byte {
	b = slices.Grow(b, 32+len(protected)+len(payload)+len(sig))
	b = append(b, 0xd2, 0x84) // tag 18, array of 4
	b = appendBstr(b, protected)
	b = append(b, 0xa0)
	if payload == nil {
		b = append(b, 0xf6)
	} else {
		b = appendBstr(b, payload)
	}
	return appendBstr(b, sig)
}

// parseSign1 reads a tagged COSE_Sign1 with an empty unprotected header in canonical form:
// the one layout ssanet writes, checked byte by byte rather than decoded and re-encoded. The
// fields alias raw.
func parseSign1(raw []byte) (m sign1, err error) {
	if len(raw) > MaxMessageSize {
		return m, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(raw), MaxMessageSize)
	}
	if len(raw) < 2 || raw[0] != 0xd2 || raw[1] != 0x84 { // tag 18, array of 4
		return m, fmt.Errorf("%w: not a tagged COSE_Sign1", ErrMalformed)
	}
	b := raw[2:]
	if m.Protected, b, err = readString(b, 2); err != nil {
		return m, err
	}
	if len(b) == 0 || b[0] != 0xa0 {
		return m, fmt.Errorf("%w: unprotected header must be empty", ErrMalformed)
	}
	b = b[1:]
	if len(b) > 0 && b[0] == 0xf6 {
		b = b[1:] // detached payload
	} else if m.Payload, b, err = readString(b, 2); err != nil {
		return m, err
	}
	if m.Signature, b, err = readString(b, 2); err != nil {
		return m, err
	}
	if len(b) != 0 {
		return m, fmt.Errorf("%w: %d bytes after the COSE_Sign1", ErrMalformed, len(b))
	}
	return m, nil
}

// verifySign1 checks a COSE_Sign1 signature (EdDSA, RFC 9052 §4.4) with the Ed25519 key
// inside kid, over the protected header and payload as received.
func verifySign1(protected, payload, sig, aad []byte, kid peer.ID) error {
	rawPub, err := ed25519Key(kid)
	if err != nil {
		return err
	}
	if payload == nil {
		return fmt.Errorf("%w: no payload to verify", ErrMalformed)
	}
	var buf [2048]byte // the Sig_structure of a usual message fits: no allocation
	if !ed25519.Verify(ed25519.PublicKey(rawPub), sigStructure(buf[:0], protected, aad, payload), sig) {
		return fmt.Errorf("%w: signer %s", ErrBadSignature, kid)
	}
	return nil
}

// ed25519Prefix starts every peer ID that embeds an Ed25519 key: an identity multihash of 36
// bytes holding the protobuf PublicKey{Type: Ed25519, Data: 32 bytes}.
const ed25519Prefix = "\x00\x24\x08\x01\x12\x20"

// ed25519Key returns the Ed25519 public key inside kid.
func ed25519Key(kid peer.ID) ([]byte, error) {
	if len(kid) == len(ed25519Prefix)+ed25519.PublicKeySize && strings.HasPrefix(string(kid), ed25519Prefix) {
		return []byte(kid[len(ed25519Prefix):]), nil // what ExtractPublicKey reads, without its allocations
	}
	pub, err := kid.ExtractPublicKey()
	if err != nil || pub.Type() != pb.KeyType_Ed25519 {
		return nil, fmt.Errorf("%w: %s", ErrUnsupportedKey, kid)
	}
	rawPub, err := pub.Raw()
	if err != nil || len(rawPub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: %s", ErrUnsupportedKey, kid)
	}
	return rawPub, nil
}
