package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// testOffer is an offer of EVE alerts with extra lines appended under terms.policy (policy)
// and under terms (terms).
func testOffer(policy, terms string) string {
	return `id: ids-alerts
terms:
  information:
    - type: attack-detection-log
      format: eve
  policy:
    handling:
      tlp: AMBER
` + policy + terms
}

// TestCheckFiles: each template or offer file that the agent would refuse, or that would make
// it refuse every request, is reported with its file, its line where the parser gives one,
// and what is wrong; the example templates pass.
func TestCheckFiles(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	if _, err := Init(home, DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name, text string
		want       string // the problem, as `config check` prints it after the file's path
	}{
		{"offer ok", testOffer("", ""), ""},
		{"filter does not compile", testOffer("    filtering:\n      - expr: r[\"source.ip\"] ==\n", ""),
			`policy: SSA cannot be enforced: bad-filter: filtering: "r[\"source.ip\"] ==": ERROR`},
		{"unknown field in filter", testOffer("    filtering:\n      - expr: r[\"no.such\"] == \"x\"\n", ""),
			`reads "no.such", which is not in the view of eve: every proposal made from it is refused (policy-unenforceable)`},
		{"unknown format", strings.Replace(testOffer("", ""), "format: eve", "format: evee", 1),
			`information[0]: format "evee" is not one this agent can parse`},
		{"schedule ended", testOffer("", "  schedule:\n    start: 2020-01-01T00:00:00Z\n    end: 2021-01-01T00:00:00Z\n"),
			"its schedule ended at 2021-01-01T00:00:00Z"},
		{"masking key missing", testOffer("    masking:\n      - scope: public-ip\n        method: cryptopan\n        key-id: site\n", ""),
			`masking[0] names key "site"`},
		{"method unsupported", testOffer("", "  method:\n    security: [ssh]\n"),
			"method.security: the provider cannot deliver over any connection security"},
		{"offer unknown key", testOffer("", "  colour: red\n"), "line 9: protocol: bad template: yaml: unmarshal errors: field colour not found in type protocol.SSA"},
		{"offer without id", strings.Replace(testOffer("", ""), "id: ids-alerts", "approval: auto", 1), "offer needs an id"},
		{"template unknown key", "information:\n  - type: attack-detection-log\n    format: eve\npolicy:\n  handlin: {}\n", "line 5: protocol: bad template: yaml: unmarshal errors: field handlin not found in type protocol.Policy"},
		{"template bad filter", "information:\n  - type: attack-detection-log\n    format: eve\npolicy:\n  filtering:\n    - expr: 1 +\n", "policy: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			if err := os.WriteFile(path, []byte(tc.text), 0o600); err != nil {
				t.Fatal(err)
			}
			got := CheckFiles(home, []string{path})
			if tc.want == "" {
				if len(got) != 0 {
					t.Fatalf("problems %v, want none", got)
				}
				return
			}
			if len(got) != 1 || got[0].Source != path || !strings.Contains(got[0].String(), tc.want) {
				t.Fatalf("problems %+v, want one of %s containing %q", got, path, tc.want)
			}
		})
	}
	examples, err := filepath.Glob("../protocol/examples/*.yaml")
	if err != nil || len(examples) == 0 {
		t.Fatalf("no example templates (%v)", err)
	}
	if got := CheckFiles(home, examples); len(got) != 0 {
		t.Errorf("example templates: %v, want no problem", got)
	}
}

// TestCheckStoredOffers: the offers in a stopped agent's store are checked, each problem
// naming its offer; a home never started has none.
func TestCheckStoredOffers(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	if _, err := Init(home, DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	if got, err := CheckStoredOffers(home); err != nil || len(got) != 0 {
		t.Fatalf("a home never started: %v, %v", got, err)
	}
	st, err := storage.Open(filepath.Join(home, DataDir), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{
		testOffer("", ""),
		strings.Replace(testOffer("    filtering:\n      - expr: r[\"source.ip\"] ==\n", ""), "id: ids-alerts", "id: broken", 1),
	} {
		o, err := protocol.ParseOfferYAML([]byte(text), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := st.PutOffer(o); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := CheckStoredOffers(home)
	if err != nil || len(got) != 1 || got[0].Source != "offer broken" || !strings.Contains(got[0].Msg, "filtering") {
		t.Fatalf("stored offers: %+v, %v; want one problem of offer broken", got, err)
	}
}
