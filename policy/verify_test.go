package policy

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"

	"github.com/ssanet/ssanet/protocol"
)

// verifyRaw is an EVE alert with a public source address, a private destination, HTTP
// fields and a public address in a member the view does not name.
const verifyRaw = `{"timestamp":"2024-03-01T10:00:00.000000+0000","flow_id":7,"event_type":"alert","src_ip":"81.2.3.4","src_port":4242,` +
	`"dest_ip":"10.1.2.3","dest_port":80,"proto":"TCP","http":{"hostname":"www.example.com","url":"/index.html","http_user_agent":"curl/8.0"},` +
	`"alert":{"signature":"ET test","signature_id":1,"severity":2},"note":"seen from 81.2.3.4"}`

// TestVerifierCatchesEveryRule: one Verifier, reused, tells each kind of violation from the
// refined record, naming the field concerned, record after record.
func TestVerifierCatchesEveryRule(t *testing.T) {
	type want struct {
		code  FindingCode
		field string
	}
	truncPublic := protocol.MaskRule{Scope: protocol.ScopePublicIP, Method: protocol.MaskTruncate, Bits: 8}
	tests := []struct {
		name   string
		pol    protocol.Policy
		format string // "" is eve
		good   string // "" is verifyRaw refined
		bad    string
		want   []want
	}{
		{name: "public address left in a named field", pol: protocol.Policy{Masking: []protocol.MaskRule{truncPublic}},
			bad:  `{"timestamp":"2024-03-01T10:00:00Z","event_type":"alert","src_ip":"81.2.3.4"}`,
			want: []want{{FindingNotTruncated, "source.ip"}}},
		{name: "public address left in an unnamed member", pol: protocol.Policy{Masking: []protocol.MaskRule{truncPublic}},
			bad:  `{"timestamp":"2024-03-01T10:00:00Z","event_type":"alert","note":"seen from 81.2.3.4"}`,
			want: []want{{FindingNotTruncated, ""}}},
		{name: "public address behind an escape", pol: protocol.Policy{Masking: []protocol.MaskRule{truncPublic}},
			bad:  `{"timestamp":"2024-03-01T10:00:00Z","event_type":"alert","note":"seen from \u00381.2.3.4"}`,
			want: []want{{FindingNotTruncated, ""}}},
		{name: "public address as a member name", pol: protocol.Policy{Masking: []protocol.MaskRule{truncPublic}},
			bad:  `{"timestamp":"2024-03-01T10:00:00Z","event_type":"alert","hosts":{"81.2.3.4":1}}`,
			want: []want{{FindingNotTruncated, ""}}},
		{name: "address left under remove", pol: protocol.Policy{Masking: []protocol.MaskRule{{Scope: protocol.ScopeAllIP, Method: protocol.MaskRemove}}},
			bad:  `{"timestamp":"2024-03-01T10:00:00Z","event_type":"alert","dest_ip":"10.1.2.3","note":"from 81.2.3.4"}`,
			want: []want{{FindingUnmaskedIP, "destination.ip"}, {FindingUnmaskedIP, ""}}},
		{name: "field not truncated", pol: protocol.Policy{Masking: []protocol.MaskRule{{Scope: protocol.ScopeFields, Fields: []string{"destination.ip"}, Method: protocol.MaskTruncate, Bits: 16}}},
			bad:  `{"timestamp":"2024-03-01T10:00:00Z","event_type":"alert","dest_ip":"10.1.2.3"}`,
			want: []want{{FindingNotTruncated, "destination.ip"}}},
		{name: "removed field present", pol: protocol.Policy{Masking: []protocol.MaskRule{{Scope: protocol.ScopeFields, Fields: []string{"url.domain"}, Method: protocol.MaskRemove}}},
			bad:  `{"timestamp":"2024-03-01T10:00:00Z","event_type":"alert","http":{"hostname":"www.example.com"}}`,
			want: []want{{FindingNotRemoved, "url.domain"}}},
		{name: "field not hashed", pol: protocol.Policy{Masking: []protocol.MaskRule{{Scope: protocol.ScopeFields, Fields: []string{"user_agent.original"}, Method: protocol.MaskHMAC}}},
			bad:  `{"timestamp":"2024-03-01T10:00:00Z","event_type":"alert","http":{"http_user_agent":"curl/8.0"}}`,
			want: []want{{FindingNotHashed, "user_agent.original"}}},
		{name: "record a filter excludes", pol: protocol.Policy{Filtering: []protocol.Filter{{Expr: `r["event.kind"] == "alert"`}}},
			bad:  `{"timestamp":"2024-03-01T10:00:00Z","event_type":"dns"}`,
			want: []want{{FindingFilterExcluded, ""}}},
		{name: "record a filter on related.ip excludes", pol: protocol.Policy{Filtering: []protocol.Filter{{Expr: `!("81.2.3.5" in r["related.ip"])`}}},
			bad:  `{"timestamp":"2024-03-01T10:00:00Z","event_type":"alert","note":"seen from 81.2.3.5"}`,
			want: []want{{FindingFilterExcluded, ""}}},
		{name: "record a filter cannot evaluate", pol: protocol.Policy{Filtering: []protocol.Filter{{Expr: `r["rule.name"] != ""`}}},
			bad:  `{"timestamp":"2024-03-01T10:00:00Z","event_type":"alert"}`,
			want: []want{{FindingFilterExcluded, ""}}},
		{name: "masking and filter both broken", pol: protocol.Policy{Masking: []protocol.MaskRule{truncPublic}, Filtering: []protocol.Filter{{Expr: `r["event.severity"] <= 2`}}},
			bad:  `{"timestamp":"2024-03-01T10:00:00Z","event_type":"alert","src_ip":"81.2.3.4","dest_ip":"81.9.9.9","alert":{"severity":3}}`,
			want: []want{{FindingNotTruncated, "source.ip"}, {FindingNotTruncated, "destination.ip"}, {FindingFilterExcluded, ""}}},
		{name: "malformed record", pol: protocol.Policy{Masking: []protocol.MaskRule{truncPublic}},
			bad:  `{"timestamp":"2024-03-01T10:00:00Z","event_type":"alert",`,
			want: []want{{FindingWrongFormat, ""}}},
		{name: "format not agreed", pol: protocol.Policy{Masking: []protocol.MaskRule{truncPublic}}, format: "idmef",
			bad:  `<IDMEF-Message/>`,
			want: []want{{FindingWrongFormat, ""}}},
		{name: "raw record under a summarisation", pol: protocol.Policy{Summarization: &protocol.Summarization{GroupBy: "source.ip", RankBy: protocol.RankByCount, TopN: 3, Window: 60}},
			good: `{"ssanet_summary":{"group_by":"source.ip","rank_by":"count","top":[{"value":"81.2.3.0","score":1}]}}`,
			bad:  verifyRaw,
			want: []want{{FindingNotSummarised, ""}}},
		{name: "summary where none is agreed", pol: protocol.Policy{Masking: []protocol.MaskRule{truncPublic}},
			bad:  `{"ssanet_summary":{"group_by":"source.ip","rank_by":"count","top":[]}}`,
			want: []want{{FindingWrongFormat, ""}}},
		{name: "summary too long", pol: protocol.Policy{Summarization: &protocol.Summarization{GroupBy: "source.ip", RankBy: protocol.RankByCount, TopN: 1, Window: 60}},
			good: `{"ssanet_summary":{"group_by":"source.ip","rank_by":"count","top":[{"value":"81.2.3.0","score":1}]}}`,
			bad:  `{"ssanet_summary":{"group_by":"source.ip","rank_by":"count","top":[{"value":"81.2.3.0","score":2},{"value":"81.2.4.0","score":1}]}}`,
			want: []want{{FindingTopTooLong, "source.ip"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pol := tt.pol
			p := mustCompile(t, ssaFor(&pol, "eve"))
			good := []byte(tt.good)
			if tt.good == "" {
				var err error
				if good, err = Enforce(p, "eve", []byte(verifyRaw)); err != nil || good == nil {
					t.Fatalf("Enforce = %q, %v", good, err)
				}
			}
			format := tt.format
			if format == "" {
				format = "eve"
			}
			v := NewVerifier(p)
			for round := range 3 {
				if f := v.Verify("eve", good); len(f) != 0 {
					t.Fatalf("round %d: the refined record %s: %v, want no finding", round, good, f)
				}
				f := v.Verify(format, []byte(tt.bad))
				var got []want
				for _, x := range f {
					got = append(got, want{x.Code, x.Field})
				}
				if !equalWants(got, tt.want) {
					t.Fatalf("round %d: %s: findings %v, want %v", round, tt.bad, f, tt.want)
				}
			}
		})
	}
}

func equalWants[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// benchRefined returns the benchmark's records of format that p keeps, raw and as refined:
// the same records on both sides of an exchange.
func benchRefined(tb testing.TB, p *SSP, format string, n int) (raw, refined [][]byte) {
	tb.Helper()
	e, err := NewEnforcer(p, format, Config{})
	if err != nil {
		tb.Fatal(err)
	}
	for _, r := range benchRecords(tb, format, n) {
		out, err := e.Refine(nil, r)
		if err != nil {
			tb.Fatal(err)
		}
		if len(out) == 0 {
			continue
		}
		raw, refined = append(raw, r), append(refined, bytes.TrimSuffix(out, []byte("\n")))
	}
	return raw, refined
}

// TestVerifierAllocations: checking a compliant record reuses the Verifier's walker, view
// and scratch instead of building them per record.
func TestVerifierAllocations(t *testing.T) {
	p := mustCompile(t, ssaFor(benchPolicy(), "eve"))
	_, refined := benchRefined(t, p, protocol.FormatEVE, 64)
	v := NewVerifier(p)
	var fresh, reused float64
	for _, r := range refined {
		fresh += testing.AllocsPerRun(5, func() { Verify(p, "eve", r) })
		reused += testing.AllocsPerRun(5, func() { v.Verify("eve", r) })
	}
	if reused > fresh-4*float64(len(refined)) {
		t.Errorf("%.1f allocations per record with a reused Verifier, %.1f with a fresh one: want at least 4 fewer",
			reused/float64(len(refined)), fresh/float64(len(refined)))
	}
	if bytes.Contains(refined[0], []byte(`"ssanet_summary"`)) {
		t.Fatal("the benchmark's records are not raw")
	}
}

// TestVerifierAllocationsPerRecord: a reused Verifier checks the benchmark's compliant
// records (BenchmarkVerifyVsRefine) with no string per member name or unnamed value, and
// only the view of the filters it evaluates: a handful of allocations per record at most.
func TestVerifierAllocationsPerRecord(t *testing.T) {
	for _, tc := range []struct {
		name   string
		filter string
		max    float64 // allocations per record, on average
	}{
		{"eve-kind", benchPolicy().Filtering[0].Expr, 1},
		{"int-field", `!("source.port" in r) || r["source.port"] > 0`, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pol := benchPolicy()
			pol.Filtering[0].Expr = tc.filter
			p := mustCompile(t, ssaFor(pol, "eve"))
			_, refined := benchRefined(t, p, protocol.FormatEVE, 200)
			v := NewVerifier(p)
			var allocs float64
			for _, r := range refined {
				allocs += testing.AllocsPerRun(3, func() {
					if f := v.Verify("eve", r); len(f) > 0 {
						t.Fatalf("%s: %v", r, f)
					}
				})
			}
			if got := allocs / float64(len(refined)); got > tc.max {
				t.Errorf("%.1f allocations per record, want at most %v", got, tc.max)
			}
		})
	}
}

// FuzzCheckerUnnamed: checking unnamed text from the address spans the codec found gives the
// findings, in order, that checking the text as a string gives, under every address scope
// and method.
func FuzzCheckerUnnamed(f *testing.F) {
	for _, s := range []string{
		"", "81.2.3.4", "81.2.3.0", " 81.2.3.4 ", "from 81.2.3.4 to 10.0.0.1", "2a00:1450:4001:80b::200e",
		"2a00::", "::", "0.0.0.0", "2001:db8::1", "host1.2.3.4", "15:01:09.820360", "aa:bb:cc:dd:ee:ff",
		"1.2.3.4.5", "[2a00:1450::1]:443", "81.2.3.4:80,8.8.8.8", "::ffff:81.2.3.4",
	} {
		f.Add(s)
	}
	var ps []*SSP
	for _, masks := range [][]protocol.MaskRule{
		{{Scope: protocol.ScopePublicIP, Method: protocol.MaskTruncate, Bits: 8}},
		{{Scope: protocol.ScopeAllIP, Method: protocol.MaskTruncate, Bits: 16}},
		{{Scope: protocol.ScopePublicIP, Method: protocol.MaskRemove}},
		{{Scope: protocol.ScopeAllIP, Method: protocol.MaskHMAC}},
		{{Scope: protocol.ScopePublicIP, Method: protocol.MaskCryptoPAn}},
		{
			{Scope: protocol.ScopeFields, Fields: []string{"source.ip"}, Method: protocol.MaskRemove},
			{Scope: protocol.ScopePublicIP, Method: protocol.MaskHMAC},
			{Scope: protocol.ScopeAllIP, Method: protocol.MaskTruncate, Bits: 24},
		},
	} {
		ps = append(ps, mustCompile(f, ssaFor(&protocol.Policy{Masking: masks}, "eve")))
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, p := range ps {
			want := &checker{p: p}
			want.text("", s, false, slotText)
			got := &checker{p: p}
			if mayHoldIP(s) {
				var spans [4]ipSpan
				got.unnamed(findIPs(spans[:0], []byte(s)))
			}
			if !slices.Equal(got.findings, want.findings) {
				t.Fatalf("%q under %v: from the spans %v, from the string %v", s, p.masks, got.findings, want.findings)
			}
		}
	})
}

// FuzzVerifierNamedFields: a record checked with only the fields the SSP reads or masks by
// name (how a Verifier checks first) has findings exactly when it has with every field
// named (how it reports them), whatever the record.
func FuzzVerifierNamedFields(f *testing.F) {
	for _, name := range []string{"eve/test-eve-small.jsonl", "eve/test-eve-6-0.jsonl", "eve/test-eve-metadata.jsonl"} {
		for _, l := range bytes.Split(readTestdata(f, name), []byte("\n")) {
			f.Add(l)
		}
	}
	f.Add([]byte(verifyRaw))
	f.Add([]byte(`{"timestamp":"2024-03-01T10:00:00Z","event_type":"alert","alert":{"severity":3}}`))
	f.Add([]byte(`{"timestamp":"2024-03-01T10:00:00Z","event_type":"alert","note":"seen from \u00381.2.3.4","hosts":{"81.2.3.4":1}}`))
	pol := &protocol.Policy{
		Masking: []protocol.MaskRule{
			{Scope: protocol.ScopePublicIP, Method: protocol.MaskTruncate, Bits: 8},
			{Scope: protocol.ScopeFields, Fields: []string{"url.domain"}, Method: protocol.MaskRemove},
			{Scope: protocol.ScopeFields, Fields: []string{"user_agent.original"}, Method: protocol.MaskHMAC},
			{Scope: protocol.ScopeFields, Fields: []string{"destination.ip"}, Method: protocol.MaskTruncate, Bits: 16},
		},
		Filtering: []protocol.Filter{{Expr: `!("event.severity" in r) || r["event.severity"] <= 2`}, {Expr: `!("81.2.3.5" in r["related.ip"])`}},
	}
	p := mustCompile(f, ssaFor(pol, "eve"))
	fv := NewVerifier(p).format("eve")
	f.Fuzz(func(t *testing.T, raw []byte) {
		named := len(fv.check(raw, fv.relevant)) > 0
		all := fv.check(raw, nil)
		if named != (len(all) > 0) {
			t.Fatalf("%q: findings with the SSP's fields named: %v; with every field named: %v", raw, named, all)
		}
	})
}

// parseSummaryRef is parseSummary as it was before maySummarise: the reference it must agree
// with.
func parseSummaryRef(record []byte) (*Summary, bool) {
	if !bytes.Contains(record, []byte(`"ssanet_summary"`)) {
		return nil, false
	}
	var r summaryRecord
	d := json.NewDecoder(bytes.NewReader(record))
	d.DisallowUnknownFields()
	if err := d.Decode(&r); err != nil || r.Summary == nil {
		return nil, false
	}
	return r.Summary, true
}

// FuzzParseSummary: telling a summary record from a raw one by its first member name gives
// the answer the decoder gives.
func FuzzParseSummary(f *testing.F) {
	for _, s := range []string{
		`{"ssanet_summary":{"group_by":"source.ip","top":[]}}`,
		" \r\n\t{ \"ssanet_summary\" :{\"group_by\":\"source.ip\"}} trailing",
		`{"SSANET_Summary":{"group_by":"a"},"ssanet_summary":{"group_by":"b"}}`,
		`{"\u0073sanet_summary":{"top":[]},"x":"\"ssanet_summary\""}`,
		"{\"\u017fsanet_summary\":{\"top\":[]},\"ssanet_summary\":{}}",
		`{"ssanet_summary":null}`,
		`{"timestamp":"2024","note":"\"ssanet_summary\""}`,
		`{"ssanet_summary":{"top":[]},"other":1}`,
		`{"ssanet_summary`,
		`null`, `[]`, `{}`, ``,
		verifyRaw,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, record []byte) {
		got, ok := parseSummary(record)
		want, wantOK := parseSummaryRef(record)
		if ok != wantOK || ok && got.GroupBy != want.GroupBy {
			t.Fatalf("%q: parseSummary = %v, %v; the decoder says %v, %v", record, got, ok, want, wantOK)
		}
	})
}

// TestCodecAllocationsPerRecord: a reused Enforcer refines, and a reused Verifier checks, the
// benchmark's IDMEF, IODEF and syslog records (BenchmarkCodec) with a handful of allocations
// per record: no string or node per element, attribute or value, no parser per record.
func TestCodecAllocationsPerRecord(t *testing.T) {
	for _, tc := range []struct {
		format         string
		refine, verify float64 // allocations per record, on average, at most
	}{
		{protocol.FormatIDMEF, 8, 2},
		{protocol.FormatIODEF, 10, 2},
		{protocol.FormatSyslog, 14, 12},
	} {
		t.Run(tc.format, func(t *testing.T) {
			pol := benchPolicy()
			pol.Filtering[0].Expr = benchSamples[tc.format].filters[0].expr
			p := mustCompile(t, ssaFor(pol, tc.format))
			raw, refined := benchRefined(t, p, tc.format, 64)
			if len(raw) == 0 {
				t.Fatalf("no %s records to measure", tc.format)
			}
			e, err := NewEnforcer(p, tc.format, Config{})
			if err != nil {
				t.Fatal(err)
			}
			v := NewVerifier(p)
			var buf []byte
			var refine, verify float64
			for i := range raw {
				refine += testing.AllocsPerRun(3, func() {
					if buf, err = e.Refine(buf[:0], raw[i]); err != nil {
						t.Fatal(err)
					}
				})
				verify += testing.AllocsPerRun(3, func() {
					if f := v.Verify(tc.format, refined[i]); len(f) > 0 {
						t.Fatalf("%s: %v", refined[i], f)
					}
				})
			}
			n := float64(len(raw))
			if refine/n > tc.refine || verify/n > tc.verify {
				t.Errorf("%.1f allocations per record to refine, %.1f to verify; want at most %v and %v",
					refine/n, verify/n, tc.refine, tc.verify)
			}
		})
	}
}
