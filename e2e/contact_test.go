package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// withContact replaces the contact block that init wrote in config.yaml.
func withContact(block string) option {
	return func(t *testing.T, a *agent) {
		t.Helper()
		path := filepath.Join(a.home, "config.yaml")
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		re := regexp.MustCompile(`(?m)^contact:\n(    .*\n)*`)
		if !re.Match(data) {
			t.Fatalf("%s: config.yaml has no contact block", a.name)
		}
		data = re.ReplaceAll(data, []byte("contact:\n"+block))
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// contactView is a participant as ssa show --json prints it.
type contactView struct {
	Affiliation string `json:"affiliation"`
	Name        string `json:"name"`
	Email       string `json:"email"`
	Phone       string `json:"phone"`
	Address     string `json:"address"`
	PeerID      string `json:"peer_id"`
}

// TestOrganisationSignsAsItself: each agent signs every SSA, as requester and as provider,
// with the organisation its config.yaml contact names (set by init), not with the one an
// offer's or a request template's participant block names: that block only completes the
// contact, and a field it sets otherwise is ignored with a warning. A template without a
// participant block is as good.
func TestOrganisationSignsAsItself(t *testing.T) {
	t.Parallel()
	prov := newAgent(t, "provider", "") // init --name provider --affiliation "provider org"
	req := newAgent(t, "requester", "", withContact(
		"    affiliation: ACME CERT\n    name: SOC\n    email: soc@acme.example\n    phone: +1 555 0100\n"))
	prov.offer("provider.yaml") // participants.provider: Example Hosting Ltd, Security operations
	// The warning's conflicts key names the field and both values.
	if prov.logLines(`"conflicts":"affiliation \"Example Hosting Ltd\" (config.yaml contact: \"provider org\")`) != 1 {
		t.Errorf("the provider did not warn once that the offer names another organisation")
	}
	full, err := os.ReadFile(testdata(t, "requester.yaml")) // participants.requester: Example National CERT
	if err != nil {
		t.Fatal(err)
	}
	bare := regexp.MustCompile(`(?m)^participants:\n(  .*\n)*`).ReplaceAll(full, nil)
	if bytes.Contains(bare, []byte("participants")) {
		t.Fatal("cannot take the participants block out of requester.yaml")
	}
	bareFile := filepath.Join(t.TempDir(), "no-participants.yaml")
	if err := os.WriteFile(bareFile, bare, 0o600); err != nil {
		t.Fatal(err)
	}
	wantReq := contactView{Affiliation: "ACME CERT", Name: "SOC", Email: "soc@acme.example", Phone: "+1 555 0100", PeerID: req.peerID()}
	wantProv := contactView{Affiliation: "provider org", Name: "provider", PeerID: prov.peerID()}
	for _, tc := range []struct{ name, template string }{
		{"template naming another organisation", testdata(t, "requester.yaml")},
		{"template without participants", bareFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, prov := req.in(t), prov.in(t)
			id := agree(t, req, prov, tc.template)
			prov.waitState(id, "approved", settle)
			for _, a := range []*agent{req, prov} {
				var v struct {
					SSA struct {
						Participants struct{ Requester, Provider contactView } `json:"participants"`
					} `json:"ssa"`
				}
				a.query(&v, "ssa", "show", id)
				if got := v.SSA.Participants; got.Requester != wantReq || got.Provider != wantProv {
					t.Errorf("%s's agreement: requester %+v, provider %+v; want %+v and %+v", a.name, got.Requester, got.Provider, wantReq, wantProv)
				}
			}
			data := sameAgreement(t, req, prov, id)
			if bytes.Contains(data, []byte("Example")) {
				t.Errorf("the signed agreement names a template's organisation")
			}
			if _, text := verifyOffline(t, data); !strings.Contains(text, "(SOC) signed") || !strings.Contains(text, "(provider) signed") {
				t.Errorf("ssa verify:\n%s", text)
			}
		})
	}
	warned := req.logLines(`"conflicts":"affiliation \"Example National CERT\" (config.yaml contact: \"ACME CERT\")`)
	if warned != 1 {
		t.Errorf("the requester warned %d times that a template names another organisation, want once", warned)
	}
}
