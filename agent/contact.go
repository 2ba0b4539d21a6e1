package agent

import (
	"fmt"
	"strings"

	"github.com/ssanet/ssanet/protocol"
)

// This side's participant in every SSA the agent signs, requester or provider, is its
// configured contact (config.yaml contact, set by ssanet init): the organisation signs as
// itself. A template's or an offer's participant block for this side is optional; it can
// only complete the contact (a field the contact leaves empty). A field that it sets
// otherwise than the contact is not taken: the agent says so in a warning, and signs with
// the contact. An agent with no contact at all signs with the template's block, as written.

// ownParticipant is this side's participant from the block a template gives (tmpl) and the
// configured contact, with tmpl's peer ID; conflicts names each field of tmpl that the
// contact sets otherwise.
func ownParticipant(tmpl, contact protocol.Participant) (p protocol.Participant, conflicts []string) {
	p = contact
	p.PeerID = tmpl.PeerID
	for _, f := range []struct {
		name     string
		dst      *string
		template string
	}{
		{"affiliation", &p.Affiliation, tmpl.Affiliation},
		{"name", &p.Name, tmpl.Name},
		{"email", &p.Email, tmpl.Email},
		{"address", &p.Address, tmpl.Address},
		{"phone", &p.Phone, tmpl.Phone},
	} {
		switch {
		case f.template == "" || f.template == *f.dst:
		case *f.dst == "":
			*f.dst = f.template
		default:
			conflicts = append(conflicts, fmt.Sprintf("%s %q (config.yaml contact: %q)", f.name, f.template, *f.dst))
		}
	}
	return p, conflicts
}

// conflictText is the warning's value for conflicts.
func conflictText(conflicts []string) string { return strings.Join(conflicts, "; ") }

// signAs makes p, this side's participant (side: requester or provider) in the SSA or offer
// key=id, the configured contact completed by p (ownParticipant), and warns of each field of p
// that the contact overrides.
func (n *negotiator) signAs(p *protocol.Participant, side, key, id string) {
	merged, conflicts := ownParticipant(*p, n.cfg.Contact)
	if len(conflicts) > 0 {
		n.log.Warn("the template's participants."+side+" differs from this agent's contact: the agent signs as its contact "+
			"(change contact in config.yaml, or remove participants."+side+" from the template)", key, id, "conflicts", conflictText(conflicts))
	}
	*p = merged
}
