package protocol

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// MsgType is one of the seven SSA negotiating messages of clause 10.1. Append-only.
type MsgType uint8

// Message types.
const (
	MsgRequest      MsgType = 1
	MsgProposal     MsgType = 2
	MsgAcceptance   MsgType = 3
	MsgRejection    MsgType = 4
	MsgCancellation MsgType = 5
	MsgRevision     MsgType = 6
	MsgConfirmation MsgType = 7
)

var msgNames = map[MsgType]string{
	MsgRequest: "request", MsgProposal: "proposal", MsgAcceptance: "acceptance", MsgRejection: "rejection",
	MsgCancellation: "cancellation", MsgRevision: "revision", MsgConfirmation: "confirmation",
}

func (t MsgType) String() string {
	if n, ok := msgNames[t]; ok {
		return n
	}
	return fmt.Sprintf("message(%d)", uint8(t))
}

// MarshalText writes the type's name.
func (t MsgType) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// Domain-separation strings, passed to COSE as external AAD. A signature made over one never
// verifies under another, so a signed rejection can never pass for a signed SSA.
var (
	aadSSA       = []byte("ssanet/v1 SSA")
	aadRejection = []byte("ssanet/v1 SSA rejection")
)

// Content types in the protected header.
const (
	ctSSA       = "application/ssanet-ssa+cbor"
	ctRejection = "application/ssanet-rejection+cbor"
)

// headerLabel is the private-use COSE header label (RFC 9052 §3.1, below -65536) under which
// the message header travels in the protected, signed header.
const headerLabel int64 = -65537

// Header identifies a message within its negotiation.
type Header struct {
	Type MsgType `cbor:"1,keyasint"`
	// Negotiation identifies the negotiation (16 bytes); every message of an SSA's life,
	// from request to annulment, shares it.
	Negotiation []byte `cbor:"2,keyasint"`
	// ID is unique per message (16 bytes).
	ID []byte `cbor:"3,keyasint"`
	// Time is when the sender made the message, in milliseconds since the Unix epoch.
	Time int64 `cbor:"4,keyasint"`
	// Prev is the SHA-256 of the previous message of the negotiation; empty for the request.
	Prev []byte `cbor:"5,keyasint,omitempty"`
}

// Rejection is the body of a rejection message: the SSA it rejects and why.
type Rejection struct {
	SSAID   string   `cbor:"1,keyasint"`
	Reasons []Reason `cbor:"2,keyasint,omitempty"`
}

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

// Envelope is one signed negotiation message: a tagged COSE_Sign1 whose protected header
// holds the algorithm, the sender's peer ID as kid, a content type and the message Header,
// and whose payload is either an SSA's signing bytes or a Rejection. Only Seal and Open make
// Envelopes, so an Envelope's signature has always been checked.
type Envelope struct {
	Header    Header
	Sender    peer.ID
	SSA       *SSA       // set for every type but rejection
	Rejection *Rejection // set for rejection
	payload   []byte
	raw       []byte
	sig       []byte
	protected []byte
	hash      [32]byte
}

// Bytes returns the envelope as sent.
func (e *Envelope) Bytes() []byte { return e.raw }

// Hash is the SHA-256 of Bytes: what the next message's Prev names.
func (e *Envelope) Hash() []byte { return e.hash[:] }

// Payload returns the signed payload (an SSA's signing bytes, or a rejection body).
func (e *Envelope) Payload() []byte { return e.payload }

type sign1 struct {
	_           struct{} `cbor:",toarray"`
	Protected   []byte
	Unprotected map[int64]any
	Payload     []byte
	Signature   []byte
}

// Seal signs a message. For every type but rejection, body is the *SSA the message carries;
// for rejection it is a *Rejection.
func Seal(id *Identity, h Header, body any) (*Envelope, error) {
	e := &Envelope{Header: h, Sender: id.id}
	ct, aad := ctSSA, aadSSA
	var err error
	switch b := body.(type) {
	case *SSA:
		if h.Type == MsgRejection {
			return nil, fmt.Errorf("protocol: a rejection carries a Rejection, not an SSA")
		}
		e.SSA = b
		e.payload, err = b.SigningBytes()
	case *Rejection:
		if h.Type != MsgRejection {
			return nil, fmt.Errorf("protocol: a %s carries an SSA, not a Rejection", h.Type)
		}
		e.Rejection, ct, aad = b, ctRejection, aadRejection
		e.payload, err = Marshal(b)
	default:
		return nil, fmt.Errorf("protocol: cannot seal a %T", body)
	}
	if err != nil {
		return nil, err
	}
	e.protected, e.sig = id.sign(ct, appendHeader(nil, &h), aad, e.payload)
	e.raw = appendSign1(nil, e.protected, e.payload, e.sig)
	e.hash = sha256.Sum256(e.raw)
	return e, nil
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

// appendHeader appends the canonical encoding of h, as marshal writes it.
func appendHeader(b []byte, h *Header) []byte {
	n := byte(0xa4)
	if len(h.Prev) > 0 {
		n = 0xa5
	}
	b = slices.Grow(b, 96)
	b = appendHead(append(b, n, 0x01), 0, uint64(h.Type))
	b = appendNilBstr(append(b, 0x02), h.Negotiation)
	b = appendNilBstr(append(b, 0x03), h.ID)
	b = append(b, 0x04)
	if h.Time >= 0 {
		b = appendHead(b, 0, uint64(h.Time))
	} else {
		b = appendHead(b, 1, uint64(-1-h.Time))
	}
	if len(h.Prev) > 0 {
		b = appendBstr(append(b, 0x05), h.Prev)
	}
	return b
}

// appendNilBstr appends v as a byte string, or null if v is nil, as the encoder does.
func appendNilBstr(b, v []byte) []byte {
	if v == nil {
		return append(b, 0xf6)
	}
	return appendBstr(b, v)
}

// parseHeader reads a message header as appendHeader writes it for a well-formed message (a
// known type, 16-byte IDs, a 32-byte Prev or none). It reports false for anything else, which
// decodeSign1 then reads with the strict decoder.
func parseHeader(b []byte) (h Header, ok bool) {
	if len(b) < 40 || (b[0] != 0xa4 && b[0] != 0xa5) || b[1] != 0x01 || b[2] >= 24 ||
		b[3] != 0x02 || b[4] != 0x50 || b[21] != 0x03 || b[22] != 0x50 || b[39] != 0x04 {
		return h, false
	}
	h.Type, h.Negotiation, h.ID = MsgType(b[2]), b[5:21:21], b[23:39:39]
	major, n, rest, err := readHead(b[40:])
	if err != nil || n > math.MaxInt64 || (major != 0 && major != 1) {
		return h, false
	}
	h.Time = int64(n)
	if major == 1 {
		h.Time = -1 - int64(n)
	}
	if b[0] == 0xa5 {
		if len(rest) != 35 || rest[0] != 0x05 || rest[1] != 0x58 || rest[2] != 0x20 {
			return h, false
		}
		h.Prev, rest = rest[3:35:35], nil
	}
	return h, len(rest) == 0
}

// appendHead appends the head of a CBOR item of major type major and argument n, in its
// shortest form, as core deterministic encoding requires.
func appendHead(b []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(b, m|byte(n))
	case n <= 0xff:
		return append(b, m|24, byte(n))
	case n <= 0xffff:
		return append(b, m|25, byte(n>>8), byte(n))
	case n <= 0xffffffff:
		return append(b, m|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, m|27, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// headSize is the length of the shortest head with argument n.
func headSize(n uint64) int {
	switch {
	case n < 24:
		return 1
	case n <= 0xff:
		return 2
	case n <= 0xffff:
		return 3
	case n <= 0xffffffff:
		return 5
	}
	return 9
}

func appendBstr(b, v []byte) []byte { return append(appendHead(b, 2, uint64(len(v))), v...) }

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

// readHead reads the head of a CBOR item in shortest form from the front of b: its major type
// and argument.
func readHead(b []byte) (major byte, n uint64, rest []byte, err error) {
	if len(b) == 0 {
		return 0, 0, nil, fmt.Errorf("%w: truncated", ErrMalformed)
	}
	major, ai, b := b[0]>>5, b[0]&0x1f, b[1:]
	switch {
	case ai < 24:
		return major, uint64(ai), b, nil
	case ai <= 27:
		size := 1 << (ai - 24)
		if len(b) < size {
			return 0, 0, nil, fmt.Errorf("%w: truncated", ErrMalformed)
		}
		for _, c := range b[:size] {
			n = n<<8 | uint64(c)
		}
		if headSize(n) != 1+size {
			return 0, 0, nil, fmt.Errorf("%w: not in core deterministic form", ErrMalformed)
		}
		return major, n, b[size:], nil
	}
	return 0, 0, nil, fmt.Errorf("%w: indefinite or reserved length", ErrMalformed)
}

// readString reads a definite-length string of major type major (2: bytes, 3: text) in
// shortest form from the front of b. The string aliases b.
func readString(b []byte, major byte) (v, rest []byte, err error) {
	m, n, b, err := readHead(b)
	if err != nil {
		return nil, nil, err
	}
	if m != major {
		return nil, nil, fmt.Errorf("%w: major type %d, want %d", ErrMalformed, m, major)
	}
	if n > uint64(len(b)) {
		return nil, nil, fmt.Errorf("%w: truncated", ErrMalformed)
	}
	return b[:n:n], b[n:], nil
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

// Open decodes a message strictly and verifies its signature against the key inside the
// sender's peer ID. It does not know who the sender should be: the caller checks that
// Sender is the authenticated remote peer.
func Open(raw []byte) (*Envelope, error) {
	if len(raw) > MaxMessageSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(raw), MaxMessageSize)
	}
	m, h, ct, kid, err := decodeSign1(raw)
	if err != nil {
		return nil, err
	}
	if m.Payload == nil {
		return nil, fmt.Errorf("%w: a message's payload is not detached", ErrMalformed)
	}
	e := &Envelope{Header: h, Sender: kid, payload: m.Payload, raw: raw, sig: m.Signature, protected: m.Protected}
	aad := aadSSA
	switch {
	case h.Type == MsgRejection && ct == ctRejection:
		aad = aadRejection
		var r Rejection
		if err := unmarshalCanonical(m.Payload, &r); err != nil {
			return nil, fmt.Errorf("rejection body: %w", err)
		}
		if err := CheckSSAID(r.SSAID); err != nil {
			return nil, fmt.Errorf("%w: rejection body: %w", ErrMalformed, err)
		}
		e.Rejection = &r
	case h.Type != MsgRejection && ct == ctSSA:
		s, err := DecodeSSA(m.Payload)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", h.Type, err)
		}
		if len(s.Signatures) > 0 {
			return nil, fmt.Errorf("%w: a message's SSA carries no signatures", ErrMalformed)
		}
		e.SSA = s
	default:
		return nil, fmt.Errorf("%w: content type %q does not fit a %s", ErrMalformed, ct, h.Type)
	}
	if err := verifySign1(m.Protected, m.Payload, m.Signature, aad, kid); err != nil {
		return nil, err
	}
	e.hash = sha256.Sum256(raw)
	return e, nil
}

// decodeSign1 reads a tagged COSE_Sign1 in canonical form with an empty unprotected header and
// returns it with the ssanet fields of its protected header.
func decodeSign1(raw []byte) (m sign1, h Header, ct string, kid peer.ID, err error) {
	if m, err = parseSign1(raw); err != nil {
		return m, h, "", "", err
	}
	// The fast paths read the one canonical layout ssanet writes; anything else goes through
	// the strict decoder and its re-encoding check, so both accept exactly the same bytes.
	var ph protectedHeader
	var fast bool
	if ph.CT, ph.KID, ph.Head, fast = parseProtected(m.Protected); fast {
		ph.Alg = algEdDSA
	} else if err = unmarshalCanonical(m.Protected, &ph); err != nil {
		return m, h, "", "", fmt.Errorf("protected header: %w", err)
	}
	if ph.Alg != algEdDSA {
		return m, h, "", "", fmt.Errorf("%w: algorithm %d, want EdDSA", ErrBadSignature, ph.Alg)
	}
	if kid, err = peer.IDFromBytes(ph.KID); err != nil {
		return m, h, "", "", fmt.Errorf("%w: kid is not a peer ID: %v", ErrMalformed, err)
	}
	if h, fast = parseHeader(ph.Head); !fast {
		if err = unmarshalCanonical(ph.Head, &h); err != nil {
			return m, h, "", "", fmt.Errorf("message header: %w", err)
		}
	}
	if _, ok := msgNames[h.Type]; !ok {
		return m, h, "", "", fmt.Errorf("%w: unknown message type %d", ErrMalformed, h.Type)
	}
	if len(h.Negotiation) != 16 || len(h.ID) != 16 || (len(h.Prev) != 0 && len(h.Prev) != sha256.Size) {
		return m, h, "", "", fmt.Errorf("%w: header field of the wrong length", ErrMalformed)
	}
	return m, h, ph.CT, kid, nil
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

// detached returns the envelope's signature as a detached COSE_Sign1 (payload nil), the form
// an agreed SSA carries.
func (e *Envelope) detached() []byte { return appendSign1(nil, e.protected, nil, e.sig) }

// Signer is one party's signature on an SSA, as read by VerifySSA.
type Signer struct {
	Role   string  `json:"role"`
	PeerID peer.ID `json:"peer_id"`
	Name   string  `json:"name,omitempty"`
	// Message is the message whose signature this is (acceptance, confirmation, …).
	Message MsgType `json:"message"`
	// Time is when the signer signed, in milliseconds since the Unix epoch.
	Time int64 `json:"time"`
}

var (
	// ErrNotAgreed means an SSA does not carry the signatures of both its parties on an
	// approval or an annulment.
	ErrNotAgreed = errors.New("protocol: SSA is not signed by both parties")
)

// signing messages allowed per status: who can have made an SSA signature on an SSA with
// this status.
var signedBy = map[Status][]MsgType{
	StatusApproval:  {MsgAcceptance, MsgRevision, MsgConfirmation},
	StatusAnnulment: {MsgCancellation, MsgConfirmation},
}

// VerifySSA checks an agreed SSA offline, with nothing but its bytes: it is an approval or an
// annulment, and carries exactly one valid signature from each of its two participants, each
// made with the key inside the participant's peer ID, over this SSA's signing bytes, for an
// SSA (domain-separated), in a message that agrees or confirms.
func VerifySSA(s *SSA) ([]Signer, error) {
	allowed, ok := signedBy[s.Status]
	if !ok {
		return nil, fmt.Errorf("%w: status is %s, not approval or annulment", ErrNotAgreed, s.Status)
	}
	if len(s.Signatures) != 2 {
		return nil, fmt.Errorf("%w: %d signatures, want 2", ErrNotAgreed, len(s.Signatures))
	}
	payload, err := s.SigningBytes()
	if err != nil {
		return nil, err
	}
	parts := map[string]*Participant{
		"requester": &s.Participants.Requester,
		"provider":  &s.Participants.Provider,
	}
	var out []Signer
	seen := map[peer.ID]bool{}
	for i, raw := range s.Signatures {
		m, h, ct, kid, err := decodeSign1(raw)
		if err != nil {
			return nil, fmt.Errorf("signature %d: %w", i+1, err)
		}
		if ct != ctSSA || m.Payload != nil {
			return nil, fmt.Errorf("signature %d: %w: not a detached SSA signature", i+1, ErrBadSignature)
		}
		if err := verifySign1(m.Protected, payload, m.Signature, aadSSA, kid); err != nil {
			return nil, fmt.Errorf("signature %d: %w", i+1, err)
		}
		var role string
		signer := kid.String()
		for r, p := range parts {
			if p.PeerID == signer {
				role = r
			}
		}
		if role == "" {
			return nil, fmt.Errorf("signature %d: %w: signer %s is not a participant", i+1, ErrNotAgreed, kid)
		}
		if seen[kid] {
			return nil, fmt.Errorf("signature %d: %w: %s signed twice", i+1, ErrNotAgreed, kid)
		}
		seen[kid] = true
		valid := false
		for _, t := range allowed {
			valid = valid || t == h.Type
		}
		if !valid {
			return nil, fmt.Errorf("signature %d: %w: a %s does not agree to an SSA with status %s", i+1, ErrNotAgreed, h.Type, s.Status)
		}
		out = append(out, Signer{Role: role, PeerID: kid, Name: parts[role].Name, Message: h.Type, Time: h.Time})
	}
	return out, nil
}
