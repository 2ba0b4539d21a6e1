package main

import (
	"path/filepath"
	"testing"

	"github.com/ssanet/ssanet/agent"
	"github.com/ssanet/ssanet/protocol"
)

// TestInitContact: init writes the organisation's contact details into config.yaml, where
// the agent takes this side's participant of every SSA from; --affiliation is --org.
func TestInitContact(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want protocol.Participant
	}{
		{"every detail", []string{"--org", "ACME CERT", "--name", "SOC", "--email", "soc@acme.example", "--phone", "+1 555 0100", "--address", "1 Main St"},
			protocol.Participant{Affiliation: "ACME CERT", Name: "SOC", Email: "soc@acme.example", Phone: "+1 555 0100", Address: "1 Main St"}},
		{"--affiliation", []string{"--affiliation", "ACME CERT"}, protocol.Participant{Affiliation: "ACME CERT"}},
		{"none", nil, protocol.Participant{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			home := filepath.Join(t.TempDir(), "agent")
			args := append([]string{"--home", home, "init", "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns=false"}, tc.args...)
			if _, errs, code := ssanet(t, args...); code != 0 {
				t.Fatalf("init: exit %d: %s", code, errs)
			}
			cfg, err := agent.LoadConfig(filepath.Join(home, "config.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Contact != tc.want {
				t.Errorf("config.yaml contact %+v, want %+v", cfg.Contact, tc.want)
			}
		})
	}
}
