package agent

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/ssanet/ssanet/agent/sink"
)

// TestSyslogSinkConfig: the syslog keys of a sink in config.yaml make the writer's config,
// and a value the writer cannot work with is refused with the key named.
func TestSyslogSinkConfig(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       sink.SyslogConfig // compared without TLS and the defaults Validate fills in
		wantErr    string
	}{
		{"defaults", `{type: syslog, network: udp, address: "127.0.0.1:514"}`,
			sink.SyslogConfig{Network: "udp", Address: "127.0.0.1:514", Facility: 13, Severity: -1, MaxMessage: 8192}, ""},
		{"all set", `{type: syslog, network: relp, address: "h:2514", facility: 0, severity: "4", sd-id: ssanet@64700}`,
			sink.SyslogConfig{Network: "relp", Address: "h:2514", Facility: 0, Severity: 4, SDID: "ssanet@64700", MaxMessage: 8192}, ""},
		{"udp size", `{type: syslog, network: udp, address: "h:514", max-message: 65507, severity: record}`,
			sink.SyslogConfig{Network: "udp", Address: "h:514", Facility: 13, Severity: -1, MaxMessage: 65507}, ""},
		{"tls with system roots", `{type: syslog, network: tls, address: "h:6514"}`,
			sink.SyslogConfig{Network: "tls", Address: "h:6514", Facility: 13, Severity: -1, MaxMessage: 8192}, ""},
		{"severity word", `{type: syslog, network: tcp, address: "h:1", severity: high}`, sink.SyslogConfig{}, "severity"},
		{"sd-id", `{type: syslog, network: tcp, address: "h:1", sd-id: ssanet}`, sink.SyslogConfig{}, "sd-id"},
		{"network", `{type: syslog, network: sctp, address: "h:1"}`, sink.SyslogConfig{}, "network"},
		{"tls files without tls", `{type: syslog, network: tcp, address: "h:1", tls-ca: ca.pem}`, sink.SyslogConfig{}, "need network tls"},
		{"missing CA file", `{type: syslog, network: tls, address: "h:1", tls-ca: /nonexistent/ca.pem}`, sink.SyslogConfig{}, "tls-ca"},
		{"cert without key", `{type: syslog, network: tls, address: "h:1", tls-cert: c.pem}`, sink.SyslogConfig{}, "go together"},
		{"facility", `{type: syslog, network: udp, address: "h:1", facility: 24}`, sink.SyslogConfig{}, "facility"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c SinkConfig
			if err := yaml.Unmarshal([]byte(tc.yaml), &c); err != nil {
				t.Fatal(err)
			}
			err := c.validate()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("validate: %v, want an error about %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.syslogConfig()
			if err != nil {
				t.Fatal(err)
			}
			if (got.TLS != nil) != (tc.want.Network == "tls") {
				t.Errorf("TLS config %v for network %s", got.TLS, tc.want.Network)
			}
			got.TLS, got.Window = nil, 0
			if got != tc.want {
				t.Errorf("syslog config %+v, want %+v", got, tc.want)
			}
		})
	}
}
