package policy

import (
	"testing"

	"github.com/ssanet/ssanet/protocol"
)

// TestAppendText checks that the masker's path for unnamed text, from the spans found in
// one scan, writes what value writes, for every method and scope, or declines.
func TestAppendText(t *testing.T) {
	texts := []string{
		"81.2.69.192", " 81.2.69.192", "81.2.69.192 ", "10.0.0.1", "2a02:c7f:1234::7", "2001:db8::1",
		"from 81.2.69.192 to 10.1.2.3 and 2a02:c7f:1234::7.", "81.2.69.192,81.2.69.193", "[2a02:c7f::1]:443",
		"no address 1.2.3", "::ffff:81.2.69.192", "2001:db8:522f:e68c::1 81.2.69.192",
		"\u00a081.2.69.192\u2003", "\n 81.2.69.192\t", "\xff81.2.69.192",
	}
	rules := []protocol.MaskRule{
		{Scope: protocol.ScopePublicIP, Method: protocol.MaskTruncate, Bits: 8},
		{Scope: protocol.ScopeAllIP, Method: protocol.MaskTruncate, Bits: 24},
		{Scope: protocol.ScopePublicIP, Method: protocol.MaskCryptoPAn, KeyID: "sample"},
		{Scope: protocol.ScopeAllIP, Method: protocol.MaskHMAC},
		{Scope: protocol.ScopePublicIP, Method: protocol.MaskRemove},
		{Scope: protocol.ScopeAllIP, Method: protocol.MaskRemove},
	}
	for _, r := range rules {
		for _, extra := range [][]protocol.MaskRule{nil, {{Scope: protocol.ScopeFields, Fields: []string{"source.ip"}, Method: protocol.MaskHMAC}}} {
			p := mustCompile(t, ssaFor(&protocol.Policy{Masking: append([]protocol.MaskRule{r}, extra...)}, "eve"))
			m, err := p.newMasker()
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range texts {
				for range 2 { // the second time from cryptopan's cache
					want, drop := m.value("", s, slotText)
					spans := findIPs(nil, s)
					if len(spans) == 0 {
						continue
					}
					got, ok := appendText(m, nil, []byte(s), spans)
					if ok && (drop || string(got) != want) {
						t.Errorf("%s %s on %q: appendText %q, value %q (drop %v)", r.Scope, r.Method, s, got, want, drop)
					}
					if !ok && len(got) != 0 {
						t.Errorf("%s %s on %q: declined but appended %q", r.Scope, r.Method, s, got)
					}
					if gotS, okS := appendText(m, nil, s, spans); okS != ok || string(gotS) != string(got) {
						t.Errorf("%s %s on %q: appendText of the string %q %v, of the bytes %q %v", r.Scope, r.Method, s, gotS, okS, got, ok)
					}
				}
			}
		}
	}
	// Two rules for addresses anywhere: declined.
	p := mustCompile(t, ssaFor(&protocol.Policy{Masking: []protocol.MaskRule{rules[0], rules[3]}}, "eve"))
	m, err := p.newMasker()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := appendText(m, nil, []byte("81.2.69.192"), findIPs(nil, "81.2.69.192")); ok {
		t.Error("two rules: appendText did not decline")
	}
}
