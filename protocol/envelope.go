package protocol

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/veraison/go-cose"
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
	id     peer.ID
	signer cose.Signer
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
	signer, err := cose.NewSigner(cose.AlgorithmEdDSA, ed25519.PrivateKey(raw))
	if err != nil {
		return nil, fmt.Errorf("protocol: signer: %w", err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("protocol: peer ID: %w", err)
	}
	return &Identity{id: id, signer: signer}, nil
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
		e.payload, err = marshal(b)
	default:
		return nil, fmt.Errorf("protocol: cannot seal a %T", body)
	}
	if err != nil {
		return nil, err
	}
	hb, err := marshal(&h)
	if err != nil {
		return nil, err
	}
	msg := cose.Sign1Message{
		Headers: cose.Headers{Protected: cose.ProtectedHeader{
			cose.HeaderLabelAlgorithm:   cose.AlgorithmEdDSA,
			cose.HeaderLabelKeyID:       []byte(id.id),
			cose.HeaderLabelContentType: ct,
			headerLabel:                 hb,
		}},
		Payload: e.payload,
	}
	if err := msg.Sign(nil, aad, id.signer); err != nil {
		return nil, fmt.Errorf("protocol: sign %s: %w", h.Type, err)
	}
	wrapped, err := msg.Headers.MarshalProtected()
	if err != nil {
		return nil, fmt.Errorf("protocol: encode protected header: %w", err)
	}
	if err := decMode.Unmarshal(wrapped, &e.protected); err != nil {
		return nil, fmt.Errorf("protocol: encode protected header: %w", err)
	}
	e.sig = msg.Signature
	if e.raw, err = msg.MarshalCBOR(); err != nil {
		return nil, fmt.Errorf("protocol: encode %s: %w", h.Type, err)
	}
	e.hash = sha256.Sum256(e.raw)
	return e, nil
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
	e := &Envelope{Header: h, Sender: kid, payload: m.Payload, raw: raw, sig: m.Signature, protected: m.Protected}
	aad := aadSSA
	switch {
	case h.Type == MsgRejection && ct == ctRejection:
		aad = aadRejection
		var r Rejection
		if err := unmarshalCanonical(m.Payload, &r); err != nil {
			return nil, fmt.Errorf("rejection body: %w", err)
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
	if len(raw) == 0 || raw[0] != 0xd2 { // tag 18: COSE_Sign1
		return m, h, "", "", fmt.Errorf("%w: not a tagged COSE_Sign1", ErrMalformed)
	}
	if err = unmarshalCanonical(raw[1:], &m); err != nil {
		return m, h, "", "", err
	}
	if len(m.Unprotected) != 0 {
		return m, h, "", "", fmt.Errorf("%w: unprotected header must be empty", ErrMalformed)
	}
	var ph struct {
		Alg  int64  `cbor:"1,keyasint"`
		CT   string `cbor:"3,keyasint"`
		KID  []byte `cbor:"4,keyasint"`
		Head []byte `cbor:"-65537,keyasint"`
	}
	if err = unmarshalCanonical(m.Protected, &ph); err != nil {
		return m, h, "", "", fmt.Errorf("protected header: %w", err)
	}
	if ph.Alg != int64(cose.AlgorithmEdDSA) {
		return m, h, "", "", fmt.Errorf("%w: algorithm %d, want EdDSA", ErrBadSignature, ph.Alg)
	}
	if kid, err = peer.IDFromBytes(ph.KID); err != nil {
		return m, h, "", "", fmt.Errorf("%w: kid is not a peer ID: %v", ErrMalformed, err)
	}
	if err = unmarshalCanonical(ph.Head, &h); err != nil {
		return m, h, "", "", fmt.Errorf("message header: %w", err)
	}
	if _, ok := msgNames[h.Type]; !ok {
		return m, h, "", "", fmt.Errorf("%w: unknown message type %d", ErrMalformed, h.Type)
	}
	if len(h.Negotiation) != 16 || len(h.ID) != 16 || (len(h.Prev) != 0 && len(h.Prev) != sha256.Size) {
		return m, h, "", "", fmt.Errorf("%w: header field of the wrong length", ErrMalformed)
	}
	return m, h, ph.CT, kid, nil
}

// verifySign1 checks a COSE_Sign1 signature with go-cose, with the Ed25519 key inside kid.
func verifySign1(protected, payload, sig, aad []byte, kid peer.ID) error {
	pub, err := kid.ExtractPublicKey()
	if err != nil || pub.Type() != pb.KeyType_Ed25519 {
		return fmt.Errorf("%w: %s", ErrUnsupportedKey, kid)
	}
	rawPub, err := pub.Raw()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
	}
	v, err := cose.NewVerifier(cose.AlgorithmEdDSA, ed25519.PublicKey(rawPub))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
	}
	wrapped, err := marshal(protected)
	if err != nil {
		return err
	}
	msg := cose.Sign1Message{Headers: cose.Headers{RawProtected: wrapped, RawUnprotected: []byte{0xa0}}, Payload: payload, Signature: sig}
	if err := msg.Headers.UnmarshalFromRaw(); err != nil {
		return fmt.Errorf("%w: protected header: %v", ErrMalformed, err)
	}
	if err := msg.Verify(aad, v); err != nil {
		return fmt.Errorf("%w: signer %s: %v", ErrBadSignature, kid, err)
	}
	return nil
}

// detached returns the envelope's signature as a detached COSE_Sign1 (payload nil), the form
// an agreed SSA carries.
func (e *Envelope) detached() []byte {
	b, err := marshal(sign1{Protected: e.protected, Unprotected: map[int64]any{}, Signature: e.sig})
	if err != nil {
		panic(err) // byte strings always encode
	}
	return append([]byte{0xd2}, b...)
}

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
		for r, p := range parts {
			if p.PeerID == kid.String() {
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
