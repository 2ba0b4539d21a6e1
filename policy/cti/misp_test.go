package cti

import (
	"slices"
	"strings"
	"testing"

	"github.com/ssanet/ssanet/protocol"
)

// TestMISPAttributes: each format's samples give attributes of valid category-type pairs
// (the core format's list), each once per record, masked addresses as networks, and an
// address in a name field by the side it names.
func TestMISPAttributes(t *testing.T) {
	valid := map[string][]string{
		"Network activity": {"ip-src", "ip-dst", "hostname", "domain", "url", "user-agent", "http-method", "email-src", "email-dst"},
		"Targeting data":   {"target-user"},
		"Other":            {"text"},
		"Payload delivery": {"filename"},
	}
	a, p := agreement(t, protocol.TLPAmber, protocol.MaskRule{Scope: protocol.ScopePublicIP, Method: protocol.MaskTruncate, Bits: 8})
	types := map[string]bool{}
	var nets []string
	for _, s := range samples {
		for _, r := range refine(t, p, readSample(t, s.format, s.file, 0)) {
			attrs, err := a.MISPAttributes(r)
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for _, x := range attrs {
				if !slices.Contains(valid[x.Category], x.Type) || x.Value == "" || x.ToIDS {
					t.Errorf("%s seq %d: %+v", s.file, r.Seq, x)
				}
				if seen[x.Type+" "+x.Value] {
					t.Errorf("%s seq %d: %s %s twice", s.file, r.Seq, x.Type, x.Value)
				}
				seen[x.Type+" "+x.Value] = true
				types[x.Type] = true
				if strings.Contains(x.Value, "/") && strings.HasPrefix(x.Type, "ip-") {
					nets = append(nets, x.Value)
				}
			}
		}
	}
	for _, want := range []string{"ip-src", "ip-dst", "domain", "hostname", "url", "user-agent", "email-src", "text"} {
		if !types[want] {
			t.Errorf("no sample gave an attribute of type %s (got %v)", want, types)
		}
	}
	if len(nets) == 0 {
		t.Error("no truncated address became a network")
	}
	syslog := Record{Seq: 1, Received: received, Format: protocol.FormatSyslog, Data: []byte("<34>1 2026-12-06T10:00:00Z 192.0.2.7 sshd 42 - - Failed password")}
	attrs, err := a.MISPAttributes(syslog)
	if err != nil || !slices.ContainsFunc(attrs, func(x MISPAttribute) bool { return x.Type == "ip-src" && x.Value == "192.0.2.7" }) {
		t.Errorf("syslog host address: %+v %v, want ip-src 192.0.2.7", attrs, err)
	}
}
