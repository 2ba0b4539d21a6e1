package protocol

import "fmt"

// Code is a machine-readable reason for refusing: a rejection names one per conflicting
// component. Append-only: codes are never renumbered or reused.
type Code uint16

// Reason codes.
const (
	CodeUnspecified         Code = 0
	CodeInformation         Code = 1  // no requested information is offered in a requested format
	CodeMasking             Code = 2  // the provider masks more than the requester tolerates
	CodeFiltering           Code = 3  // a filter cannot be combined or enforced
	CodeSummarization       Code = 4  // summarisation rules disagree
	CodeHandling            Code = 5  // handling rules disagree
	CodeMethodProtocol      Code = 6  // no delivery protocol in common
	CodeMethodSecurity      Code = 7  // no delivery security in common
	CodeSchedule            Code = 8  // the schedules do not overlap
	CodeProposalExpired     Code = 9  // the proposal's validity limit passed before acceptance
	CodePolicyUnenforceable Code = 10 // the policy uses something the engine cannot enforce
	CodeDeclined            Code = 11 // an operator declined
	CodeTermsChanged        Code = 12 // the answer does not carry the terms it answers
	CodeNotAuthorized       Code = 13 // the peer is not allowed to negotiate with this agent
	CodeParticipant         Code = 14 // participant details do not match the peers
	CodeNoOffer             Code = 15 // the provider has no offer for this request
	CodeSSAIDInUse          Code = 16 // the SSA ID already names another negotiation's SSA
	CodeFilterCost          Code = 17 // a filter may cost more CPU per record than the provider allows
	CodeAgreementLimit      Code = 18 // the requester holds as many agreements as the provider allows a peer
	CodeMethodUnsupported   Code = 19 // the agreed method lists no protocol or no security the refusing agent can deliver over
	CodeRequestExpired      Code = 20 // the request's validity limit passed unanswered
	CodeRevisionExpired     Code = 21 // the revision's validity limit passed unanswered
	CodeWithdrawn           Code = 22 // the requester withdrew its request
	CodeNotSSAnetPeer       Code = 23 // local: the peer speaks libp2p but not the negotiation protocol
)

var codeNames = map[Code]string{
	CodeUnspecified:         "unspecified",
	CodeInformation:         "information",
	CodeMasking:             "masking",
	CodeFiltering:           "filtering",
	CodeSummarization:       "summarization",
	CodeHandling:            "handling",
	CodeMethodProtocol:      "method-protocol",
	CodeMethodSecurity:      "method-security",
	CodeSchedule:            "schedule",
	CodeProposalExpired:     "proposal-expired",
	CodePolicyUnenforceable: "policy-unenforceable",
	CodeDeclined:            "declined",
	CodeTermsChanged:        "terms-changed",
	CodeNotAuthorized:       "not-authorized",
	CodeParticipant:         "participant",
	CodeNoOffer:             "no-offer",
	CodeSSAIDInUse:          "ssa-id-in-use",
	CodeFilterCost:          "filter-cost",
	CodeAgreementLimit:      "agreement-limit",
	CodeMethodUnsupported:   "method-unsupported",
	CodeRequestExpired:      "request-expired",
	CodeRevisionExpired:     "revision-expired",
	CodeWithdrawn:           "withdrawn",
	CodeNotSSAnetPeer:       "not-ssanet-peer",
}

func (c Code) String() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("code(%d)", uint16(c))
}

// MarshalText writes the code's name.
func (c Code) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText reads a code's name (or its number, for a code this version does not know).
func (c *Code) UnmarshalText(b []byte) error {
	for k, v := range codeNames {
		if v == string(b) {
			*c = k
			return nil
		}
	}
	var n uint16
	if _, err := fmt.Sscanf(string(b), "code(%d)", &n); err != nil {
		return fmt.Errorf("protocol: unknown reason code %q", b)
	}
	*c = Code(n)
	return nil
}

// Reason explains one refusal: which component conflicts, what each side wanted and a
// sentence for a person.
type Reason struct {
	Code      Code   `cbor:"1,keyasint" json:"code"`
	Component string `cbor:"2,keyasint,omitempty" json:"component,omitempty"`
	Requester string `cbor:"3,keyasint,omitempty" json:"requester,omitempty"`
	Provider  string `cbor:"4,keyasint,omitempty" json:"provider,omitempty"`
	Text      string `cbor:"5,keyasint,omitempty" json:"text,omitempty"`
}

func (r Reason) String() string {
	s := r.Code.String()
	if r.Component != "" {
		s += " (" + r.Component + ")"
	}
	if r.Text != "" {
		s += ": " + r.Text
	}
	if r.Requester != "" || r.Provider != "" {
		s += fmt.Sprintf(" [requester: %s; provider: %s]", orNone(r.Requester), orNone(r.Provider))
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
