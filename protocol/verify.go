package protocol

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
)

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
