package agent

import (
	"slices"
	"strings"
	"testing"

	"github.com/ssanet/ssanet/protocol"
)

// TestOwnParticipant: this side's participant is the configured contact; a template's block
// only completes it, and each field it sets otherwise is named as a conflict.
func TestOwnParticipant(t *testing.T) {
	contact := protocol.Participant{Affiliation: "ACME CERT", Name: "SOC", Phone: "+1 555 0100"}
	for _, tc := range []struct {
		name      string
		tmpl      protocol.Participant
		contact   protocol.Participant
		want      protocol.Participant
		conflicts []string // fields named
	}{
		{"no block", protocol.Participant{PeerID: "p"}, contact,
			protocol.Participant{Affiliation: "ACME CERT", Name: "SOC", Phone: "+1 555 0100", PeerID: "p"}, nil},
		{"the same block", contact, contact, contact, nil},
		{"a block that completes the contact", protocol.Participant{Name: "SOC", Email: "soc@acme.example"}, contact,
			protocol.Participant{Affiliation: "ACME CERT", Name: "SOC", Email: "soc@acme.example", Phone: "+1 555 0100"}, nil},
		{"another organisation", protocol.Participant{Affiliation: "Example National CERT", Name: "SOC duty desk", Address: "1 Example Street"}, contact,
			protocol.Participant{Affiliation: "ACME CERT", Name: "SOC", Address: "1 Example Street", Phone: "+1 555 0100"}, []string{"affiliation", "name"}},
		{"no contact configured", protocol.Participant{Affiliation: "Example National CERT"}, protocol.Participant{},
			protocol.Participant{Affiliation: "Example National CERT"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, conflicts := ownParticipant(tc.tmpl, tc.contact)
			if got != tc.want {
				t.Errorf("participant %+v, want %+v", got, tc.want)
			}
			var fields []string
			for _, c := range conflicts {
				fields = append(fields, strings.Fields(c)[0])
				if !strings.Contains(c, "config.yaml contact") {
					t.Errorf("conflict %q does not name both values", c)
				}
			}
			if !slices.Equal(fields, tc.conflicts) {
				t.Errorf("conflicts %q, want the fields %q", conflicts, tc.conflicts)
			}
		})
	}
}
