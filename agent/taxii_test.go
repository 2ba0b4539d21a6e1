package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckConfigTAXII: `ssanet config check` reports what the TAXII server would refuse at
// start: its section's rules, a missing secret file, a missing certificate.
func TestCheckConfigTAXII(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	if _, err := Init(home, DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	base, err := os.ReadFile(filepath.Join(home, ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	section := func(readers string) string {
		return "\ntaxii:\n  listen: 127.0.0.1:0\n  tls-cert: taxii.crt\n  tls-key: taxii.key\n  users:\n    misp: {password-file: misp.pw}\n" +
			"  collections:\n    - {ssa: ssa-1, readers: [" + readers + "]}\n"
	}
	for _, tc := range []struct {
		name, text string
		files      []string
		want       string // "" none
	}{
		{"unknown reader", section("misp, bob"), nil, `reader "bob" is not under taxii.users`},
		{"no secret file", section("misp"), nil, "misp.pw"},
		{"no certificate", section("misp"), []string{"misp.pw"}, "tls-cert and tls-key"},
		{"off", "\ntaxii: {}\n", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, f := range []string{"misp.pw", "taxii.crt", "taxii.key"} {
				os.Remove(filepath.Join(home, f))
			}
			for _, f := range tc.files {
				if err := os.WriteFile(filepath.Join(home, f), []byte("secret\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(home, ConfigFile), append(append([]byte{}, base...), tc.text...), 0o600); err != nil {
				t.Fatal(err)
			}
			probs := CheckConfig(home)
			var msgs []string
			for _, p := range probs {
				msgs = append(msgs, p.Msg)
			}
			all := strings.Join(msgs, "\n")
			if (tc.want == "") != (len(probs) == 0) || !strings.Contains(all, tc.want) {
				t.Errorf("problems %q, want one saying %q", all, tc.want)
			}
		})
	}
}
