package protocol

import (
	"fmt"
	"time"
)

// Approval modes of an offer.
const (
	ApprovalAuto   = "auto"   // the provider answers requests from the meet at once
	ApprovalManual = "manual" // an operator approves or declines each request
)

// DefaultProposalValidity is how long a proposal stays acceptable when the offer says nothing.
const DefaultProposalValidity Duration = 3600

// Offer is what a provider shares and on what terms: the provider's SSA template (SSA-B of
// Appendix I) with how requests for it are decided.
type Offer struct {
	ID       string `cbor:"1,keyasint" yaml:"id" json:"id"`
	Approval string `cbor:"2,keyasint,omitempty" yaml:"approval,omitempty" json:"approval,omitempty"`
	// ProposalValidity is how long a proposal made from this offer can be accepted.
	ProposalValidity Duration `cbor:"3,keyasint,omitempty" yaml:"proposal-validity,omitempty" json:"proposal_validity,omitempty"`
	Terms            SSA      `cbor:"4,keyasint" yaml:"terms" json:"terms"`
}

// ParseOfferYAML reads an offer written by a person; see ParseSSAYAML for the rules.
func ParseOfferYAML(data []byte, now time.Time) (*Offer, error) {
	var o Offer
	if err := decodeYAML(data, now, &o); err != nil {
		return nil, err
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	return &o, nil
}

// Validate checks an offer.
func (o *Offer) Validate() error {
	if o.ID == "" {
		return fmt.Errorf("%w: offer needs an id", ErrInvalidSSA)
	}
	switch o.Approval {
	case "", ApprovalAuto, ApprovalManual:
	default:
		return fmt.Errorf("%w: offer %s: approval must be auto or manual, not %q", ErrInvalidSSA, o.ID, o.Approval)
	}
	if o.ProposalValidity < 0 {
		return fmt.Errorf("%w: offer %s: negative proposal-validity", ErrInvalidSSA, o.ID)
	}
	if len(o.Terms.Information) == 0 {
		return fmt.Errorf("%w: offer %s offers no information", ErrInvalidSSA, o.ID)
	}
	if o.Terms.Status != 0 {
		// Satisfies tells an offer's terms from a request by the status only a request has.
		return fmt.Errorf("%w: offer %s: terms carry status %s; leave status out, the negotiation sets it", ErrInvalidSSA, o.ID, o.Terms.Status)
	}
	return o.Terms.Validate()
}

// Manual reports whether an operator decides requests for this offer.
func (o *Offer) Manual() bool { return o.Approval == ApprovalManual }

// Validity is how long a proposal made from o stays acceptable.
func (o *Offer) Validity() Duration {
	if o.ProposalValidity == 0 {
		return DefaultProposalValidity
	}
	return o.ProposalValidity
}

// Matches reports whether the offer shares at least one of the requested (type, format)
// pairs.
func (o *Offer) Matches(req *SSA) bool {
	for _, r := range req.Information {
		for _, in := range o.Terms.Information {
			if in.Type == r.Type && in.Format == r.Format {
				return true
			}
		}
	}
	return false
}
