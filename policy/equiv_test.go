package policy

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/ssanet/ssanet/protocol"
)

// TestGoldenEVEEquivalence refines every EVE sample, and the benchmark's records, under
// masking rules of every scope and method, a filter on every field of the view and a
// summary grouped by every field, and compares the output and the counts with
// testdata/golden/equiv-eve.txt, written by the engine before the work of issue 19 made it
// faster: the engine must give the same bytes and the same counts.
func TestGoldenEVEEquivalence(t *testing.T) {
	in := append(eveSamples(t), benchEVE(t, 30)...)
	spec, _ := lookupFormat(protocol.FormatEVE)
	fields := make([]string, 0, len(spec.fields))
	for f := range spec.fields {
		fields = append(fields, f)
	}
	slices.Sort(fields)

	type tc struct {
		name string
		pol  *protocol.Policy
	}
	mask := func(scope, method string, bits uint8, fields ...string) []protocol.MaskRule {
		return []protocol.MaskRule{{Scope: scope, Method: method, Bits: bits, Fields: fields}}
	}
	cases := []tc{
		{"bench", benchPolicy()},
		{"truncate all 24", &protocol.Policy{Masking: mask(protocol.ScopeAllIP, protocol.MaskTruncate, 24)}},
		{"cryptopan public", &protocol.Policy{Masking: []protocol.MaskRule{{Scope: protocol.ScopePublicIP, Method: protocol.MaskCryptoPAn, KeyID: "sample"}}}},
		{"hmac public", &protocol.Policy{Masking: mask(protocol.ScopePublicIP, protocol.MaskHMAC, 0)}},
		{"remove all", &protocol.Policy{Masking: mask(protocol.ScopeAllIP, protocol.MaskRemove, 0)}},
		{"hmac fields", &protocol.Policy{Masking: mask(protocol.ScopeFields, protocol.MaskHMAC, 0, "rule.name", "url.original", "source.ip", "source.port", "@timestamp")}},
		{"remove fields", &protocol.Policy{Masking: mask(protocol.ScopeFields, protocol.MaskRemove, 0, "destination.ip", "dns.question.name", "tls.client.server_name")}},
		{"truncate fields", &protocol.Policy{Masking: mask(protocol.ScopeFields, protocol.MaskTruncate, 16, "source.ip", "destination.ip")}},
		{"related.ip", &protocol.Policy{Masking: mask(protocol.ScopePublicIP, protocol.MaskTruncate, 8),
			Filtering: []protocol.Filter{{Expr: `r["related.ip"].exists(ip, ip.endsWith(".0"))`}}}},
	}
	for _, f := range fields {
		var expr string
		switch spec.fields[f] {
		case kindInt:
			expr = fmt.Sprintf(`!(%q in r) || r[%q] > 100`, f, f)
		case kindTime:
			expr = fmt.Sprintf(`!(%q in r) || r[%q] > timestamp("2021-01-27T00:28:11Z")`, f, f)
		case kindIPList:
			expr = fmt.Sprintf(`r[%q].size() != 2`, f)
		default:
			expr = fmt.Sprintf(`!(%q in r) || r[%q].size() %% 3 != 0 || r[%q] == "tcp"`, f, f, f)
		}
		cases = append(cases, tc{"filter " + f, &protocol.Policy{Filtering: []protocol.Filter{{Expr: fmt.Sprintf(`%q in r`, f)}, {Expr: expr}}}})
		if spec.fields[f] != kindIPList {
			cases = append(cases, tc{"group by " + f, &protocol.Policy{
				Masking:       mask(protocol.ScopePublicIP, protocol.MaskTruncate, 8),
				Summarization: &protocol.Summarization{GroupBy: f, RankBy: "source.bytes", TopN: 1000, Window: 86400 * 365 * 10}}})
		}
	}
	var all []byte
	for _, c := range cases {
		p := mustCompile(t, ssaFor(c.pol, protocol.FormatEVE))
		out, st := runAll(t, p, protocol.FormatEVE, in)
		st.Bad = nil
		s, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		if c.pol.Filtering != nil && c.pol.Masking == nil {
			// A filter case keeps some of the records as read: their digest is enough.
			out = fmt.Appendf(nil, "sha256 %x\n", sha256.Sum256(out))
		}
		all = fmt.Appendf(all, "== %s\n%s\n%s", c.name, s, out)
	}
	golden(t, "equiv-eve.txt", all)
}
