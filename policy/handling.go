package policy

import (
	"fmt"
	"slices"
	"time"

	"github.com/ssanet/ssanet/protocol"
)

// TLPMarkingID returns the STIX 2.1 marking-definition id of a TLP 2.0 label (OASIS
// cti-stix-common-objects, extension-definition-specifications/tlp-2.0).
func TLPMarkingID(label string) (string, bool) {
	switch label {
	case protocol.TLPClear:
		return "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487", true
	case protocol.TLPGreen:
		return "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb", true
	case protocol.TLPAmber:
		return "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421", true
	case protocol.TLPAmberStrict:
		return "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003", true
	case protocol.TLPRed:
		return "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1", true
	}
	return "", false
}

// Marking is the handling policy carried with every delivered batch.
type Marking struct {
	SSA string `json:"ssa"`
	SSP string `json:"ssp"` // the SSP hash
	// TLP is the TLP 2.0 label and MarkingRef its STIX 2.1 marking-definition id; both
	// empty when the SSA sets no label.
	TLP        string `json:"tlp,omitempty"`
	MarkingRef string `json:"marking_ref,omitempty"`
	// Retention is how long, in seconds from receipt, the requester may keep the records;
	// zero: no limit.
	Retention int64 `json:"retention,omitempty"`
	// Redistribution is the effective onward-sharing rule (see MayRedistribute).
	Redistribution string `json:"redistribution"`
}

// Marking returns the handling marking of the SSP's batches.
func (p *SSP) Marking() Marking {
	m := Marking{SSA: p.ssaID, SSP: p.Hash(), TLP: p.handling.TLP, Retention: int64(p.handling.Retention), Redistribution: p.Redistribution()}
	m.MarkingRef, _ = TLPMarkingID(p.handling.TLP)
	return m
}

// Expired reports whether a record received at receivedAt must be deleted at now: its
// retention limit has passed. Without a retention limit records never expire.
func Expired(p *SSP, receivedAt, now time.Time) bool {
	r := p.handling.Retention
	return r > 0 && !now.Before(receivedAt.Add(time.Duration(r)*time.Second))
}

// Recipients of onward sharing, by distance from the requester, as redistribution levels.
const (
	RecipientOrganisation = "organisation" // inside the requester's own organisation
	RecipientCommunity    = "community"    // another member of the community sharing
	RecipientAny          = "any"          // anyone, publicly
)

// tlpRedistribution is how far each TLP 2.0 label lets information go.
func tlpRedistribution(label string) string {
	switch label {
	case protocol.TLPClear:
		return "any"
	case protocol.TLPGreen:
		return "community"
	case protocol.TLPAmber, protocol.TLPAmberStrict:
		return "organisation"
	}
	return "none" // RED, and no label: fail closed
}

// Redistribution is the effective onward-sharing rule: the stricter of the SSA's
// redistribution rule and what its TLP label allows. With neither, it is "none".
func (p *SSP) Redistribution() string {
	levels := protocol.RedistributionLevels
	r := tlpRedistribution(p.handling.TLP)
	if d := p.handling.Redistribution; d != "" {
		if p.handling.TLP == "" || slices.Index(levels, d) < slices.Index(levels, r) {
			r = d
		}
	}
	return r
}

// MayRedistribute reports whether the requester may pass the SSP's records to a recipient
// (RecipientOrganisation, RecipientCommunity or RecipientAny): nil, or an error wrapping
// ErrRedistribution.
func MayRedistribute(p *SSP, recipient string) error {
	levels := protocol.RedistributionLevels
	want := slices.Index(levels, recipient)
	if want <= 0 {
		return fmt.Errorf("%w: unknown recipient %q (want organisation, community or any)", ErrRedistribution, recipient)
	}
	allowed := p.Redistribution()
	if slices.Index(levels, allowed) < want {
		return fmt.Errorf("%w: SSA %s allows %q (TLP %q), not %q", ErrRedistribution, p.ssaID, allowed, p.handling.TLP, recipient)
	}
	return nil
}
