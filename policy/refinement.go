package policy

import (
	"crypto/sha256"
	"encoding/hex"
)

// RefinementID identifies what the SSP's enforcement point does to a record: SSPs with the
// same RefinementID refine every record to the same bytes, so that one refinement serves all
// of them. It is the hash of the SSP's canonical form without the identity and version of its
// SSA, and of the keys its masking uses (keys derived for each SSA differ, and so do their
// refinements; a named key is read from its file at each compilation). A summarising SSP keeps state of its own across records: its
// RefinementID is its Hash, shared with no other.
func (p *SSP) RefinementID() string {
	if p.summary != nil {
		return p.Hash()
	}
	q := *p
	q.ssaID, q.version = "", 0
	b, err := q.canonical()
	if err != nil {
		return p.Hash() // cannot happen: p was encoded when it was compiled
	}
	h := sha256.New()
	h.Write(b)
	if p.providerKey != nil && p.needsProviderKey() {
		k := sha256.Sum256(p.providerKey)
		h.Write(k[:])
	}
	for _, m := range p.masks { // a key file may have been replaced between two compilations
		if m.namedKey != nil {
			k := sha256.Sum256(m.namedKey)
			h.Write(k[:])
		}
	}
	return "r:" + hex.EncodeToString(h.Sum(nil))
}
