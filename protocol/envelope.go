package protocol

import (
	"crypto/sha256"
	"fmt"
	"math"
	"slices"

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

// detached returns the envelope's signature as a detached COSE_Sign1 (payload nil), the form
// an agreed SSA carries.
func (e *Envelope) detached() []byte { return appendSign1(nil, e.protected, nil, e.sig) }
