package policy

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssanet/ssanet/protocol"
)

func TestCompileRefusals(t *testing.T) {
	trunc := func(fields ...string) protocol.MaskRule {
		return protocol.MaskRule{Scope: protocol.ScopeFields, Fields: fields, Method: protocol.MaskTruncate, Bits: 8}
	}
	tests := []struct {
		name    string
		formats []string
		pol     *protocol.Policy
		want    Problem // 0: accepted
	}{
		{"no policy", []string{"eve"}, nil, 0},
		{"every format", Formats(), &protocol.Policy{Masking: []protocol.MaskRule{{Scope: "public-ip", Method: "truncate", Bits: 8}}}, 0},
		{"unsupported format", []string{"stix"}, nil, ProblemUnsupportedFormat},
		{"no information", nil, nil, ProblemNoInformation},
		{"unknown mask field", []string{"eve"}, &protocol.Policy{Masking: []protocol.MaskRule{trunc("attacker.ip")}}, ProblemUnknownField},
		{"field unknown to one format", []string{"eve", "syslog"}, &protocol.Policy{Masking: []protocol.MaskRule{trunc("source.ip")}}, ProblemUnknownField},
		{"truncate a name", []string{"idmef"}, &protocol.Policy{Masking: []protocol.MaskRule{trunc("source.user.name")}}, ProblemMethod},
		{"mask a derived field", []string{"eve"}, &protocol.Policy{Masking: []protocol.MaskRule{{Scope: "fields", Fields: []string{"related.ip"}, Method: "remove"}}}, ProblemMethod},
		{"hmac a name", []string{"idmef"}, &protocol.Policy{Masking: []protocol.MaskRule{{Scope: "fields", Fields: []string{"source.user.name"}, Method: "hmac"}}}, 0},
		{"none against a scope", []string{"eve"}, &protocol.Policy{Masking: []protocol.MaskRule{{Scope: "public-ip", Method: "truncate", Bits: 8}, {Scope: "fields", Fields: []string{"source.ip"}, Method: "none"}}}, ProblemConflict},
		{"filter syntax", []string{"eve"}, &protocol.Policy{Filtering: []protocol.Filter{{Expr: `r["source.ip"] ==`}}}, ProblemBadFilter},
		{"filter not bool", []string{"eve"}, &protocol.Policy{Filtering: []protocol.Filter{{Expr: `r["source.port"] + 1`}}}, ProblemBadFilter},
		{"filter type error", []string{"eve"}, &protocol.Policy{Filtering: []protocol.Filter{{Expr: `1 == "a"`}}}, ProblemBadFilter},
		{"filter unknown field", []string{"eve"}, &protocol.Policy{Filtering: []protocol.Filter{{Expr: `r["attacker"] == "1.1.1.1"`}}}, ProblemUnknownField},
		{"filter unknown select", []string{"eve"}, &protocol.Policy{Filtering: []protocol.Filter{{Expr: `has(r.attacker)`}}}, ProblemUnknownField},
		{"filter in", []string{"eve"}, &protocol.Policy{Filtering: []protocol.Filter{{Expr: `"source.ip" in r && r["source.ip"].startsWith("1.")`}}}, 0},
		{"filter too long", []string{"eve"}, &protocol.Policy{Filtering: []protocol.Filter{{Expr: strings.Repeat("true && ", 600) + "true"}}}, ProblemLimit},
		{"rank by text", []string{"eve"}, &protocol.Policy{Summarization: &protocol.Summarization{GroupBy: "source.ip", RankBy: "rule.name", TopN: 10, Window: 3600}}, ProblemRankBy},
		{"rank by unknown", []string{"eve"}, &protocol.Policy{Summarization: &protocol.Summarization{GroupBy: "source.ip", RankBy: "bytes", TopN: 10, Window: 3600}}, ProblemRankBy},
		{"group by unknown", []string{"eve"}, &protocol.Policy{Summarization: &protocol.Summarization{GroupBy: "attacker", RankBy: "count", TopN: 10, Window: 3600}}, ProblemUnknownField},
		{"top too large", []string{"eve"}, &protocol.Policy{Summarization: &protocol.Summarization{GroupBy: "source.ip", RankBy: "count", TopN: MaxTopN + 1, Window: 3600}}, ProblemLimit},
		{"group by removed", []string{"eve"}, &protocol.Policy{
			Masking:       []protocol.MaskRule{{Scope: "fields", Fields: []string{"source.ip"}, Method: "remove"}},
			Summarization: &protocol.Summarization{GroupBy: "source.ip", RankBy: "count", TopN: 10, Window: 3600}}, ProblemConflict},
		{"invalid SSA", []string{"eve"}, &protocol.Policy{Masking: []protocol.MaskRule{{Scope: "public-ip", Method: "truncate"}}}, ProblemInvalid},
	}
	// Each case is checked without a Compiler, then twice with one shared by every case: the
	// second time each of its expressions comes from the Compiler, which must still check it
	// against the formats of the SSA at hand and refuse it for the same reason.
	shared := NewCompiler(8)
	for _, tt := range tests {
		for _, c := range []struct {
			name string
			c    *Compiler
		}{{"nil", nil}, {"compiler", shared}, {"compiler again", shared}} {
			t.Run(tt.name+"/"+c.name, func(t *testing.T) {
				checkRefusal(t, c.c.Check(ssaFor(tt.pol, tt.formats...)), tt.want)
			})
		}
	}
	if n := shared.lru.Len(); n > 8 {
		t.Errorf("compiler keeps %d expressions, bound 8", n)
	}
}

func checkRefusal(t *testing.T, err error, want Problem) {
	t.Helper()
	if want == 0 {
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		return
	}
	var r *Refusal
	if !errors.As(err, &r) || !errors.Is(err, ErrUnenforceable) {
		t.Fatalf("Check = %v, want a refusal %s", err, want)
	}
	if r.Problem != want {
		t.Errorf("problem %s (%v), want %s", r.Problem, err, want)
	}
	if pr := r.ProtocolReason(); pr.Code != protocol.CodePolicyUnenforceable {
		t.Errorf("protocol code %v", pr.Code)
	}
}

func TestSSPHash(t *testing.T) {
	pol := func() *protocol.Policy {
		return &protocol.Policy{
			Masking:   []protocol.MaskRule{{Scope: "public-ip", Method: "truncate", Bits: 8}, {Scope: "fields", Fields: []string{"source.ip", "destination.ip"}, Method: "cryptopan"}},
			Filtering: []protocol.Filter{{Expr: `r["event.kind"] == "alert"`}},
			Handling:  &protocol.Handling{TLP: "AMBER"},
		}
	}
	a, err := Compile(ssaFor(pol(), "eve", "idmef"), StaticKey(bytes.Repeat([]byte{1}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Compile(ssaFor(pol(), "idmef", "eve"), nil) // requester: no key, formats in another order
	if err != nil {
		t.Fatal(err)
	}
	if a.Hash() != b.Hash() {
		t.Errorf("same SSA, different hashes: %s %s", a.Hash(), b.Hash())
	}
	p2 := pol()
	p2.Masking[0].Bits = 16
	c := mustCompile(t, ssaFor(p2, "eve", "idmef"))
	if c.Hash() == a.Hash() {
		t.Error("a different policy has the same hash")
	}
	if !a.CanEnforce() || b.CanEnforce() {
		t.Errorf("CanEnforce: with key %v, without %v", a.CanEnforce(), b.CanEnforce())
	}
	if _, err := NewEnforcer(b, "eve", Config{}); !errors.Is(err, ErrKey) {
		t.Errorf("NewEnforcer without key: %v, want ErrKey", err)
	}
	// A per-SSA derived key masks the same way each time and differently per SSA.
	keys := DerivedKeys([]byte("a long-term provider secret"))
	rec := readTestdata(t, "eve/test-eve-metadata.jsonl")
	run := func(id string) []byte {
		s := ssaFor(&protocol.Policy{Masking: []protocol.MaskRule{{Scope: "all-ip", Method: "cryptopan"}}}, "eve")
		s.ID = id
		p, err := Compile(s, keys)
		if err != nil {
			t.Fatal(err)
		}
		out, err := Enforce(p, "eve", rec)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	if x, y := run("a"), run("a"); !bytes.Equal(x, y) {
		t.Error("same SSA, different masking")
	}
	if x, y := run("a"), run("b"); bytes.Equal(x, y) {
		t.Error("two SSAs share a masking key")
	}
}

func TestMaskMethods(t *testing.T) {
	rec := readTestdata(t, "idmef/rfc4765-portscan.xml")
	tests := []struct {
		name      string
		rule      protocol.MaskRule
		has, hasn []string
	}{
		{"cryptopan named key", protocol.MaskRule{Scope: "fields", Fields: []string{"source.ip"}, Method: "cryptopan", KeyID: "sample"}, []string{"81.2.69.160"}, []string{">81.2.69.192<"}},
		{"hmac user", protocol.MaskRule{Scope: "fields", Fields: []string{"source.user.name"}, Method: "hmac", KeyID: "sample"}, []string{"81.2.69.192"}, []string{">mallory<"}},
		{"remove attribute", protocol.MaskRule{Scope: "fields", Fields: []string{"rule.name"}, Method: "remove"}, []string{"<idmef:Classification>"}, []string{"simple portscan"}},
		{"remove element text", protocol.MaskRule{Scope: "fields", Fields: []string{"source.domain"}, Method: "remove"}, []string{"<idmef:name></idmef:name>"}, []string{"scanner.example.net"}},
		{"all-ip truncate 16", protocol.MaskRule{Scope: "all-ip", Method: "truncate", Bits: 16}, []string{"10.0.0.0", "192.0.0.0", "81.2.0.0", "2a02:c7f:1234::"}, []string{"10.0.0.20", "192.0.2.62"}},
		{"public-ip remove", protocol.MaskRule{Scope: "public-ip", Method: "remove"}, []string{"10.0.0.20", "seen from (removed) and (removed)<"}, []string{"81.2.69"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustCompile(t, ssaFor(&protocol.Policy{Masking: []protocol.MaskRule{tt.rule}}, "idmef"))
			out, err := Enforce(p, "idmef", rec)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tt.has {
				if !bytes.Contains(out, []byte(s)) {
					t.Errorf("output lacks %q", s)
				}
			}
			for _, s := range tt.hasn {
				if bytes.Contains(out, []byte(s)) {
					t.Errorf("output still has %q", s)
				}
			}
			if f := Verify(p, "idmef", out); len(f) != 0 {
				t.Errorf("Verify: %v", f)
			}
			if f := Verify(p, "idmef", rec); tt.rule.Method != "cryptopan" && len(f) == 0 {
				t.Error("Verify of the raw record finds nothing")
			}
		})
	}
	// cryptopan with the sample key, named by its key ID, gives the reference mapping.
	p := mustCompile(t, ssaFor(&protocol.Policy{Masking: []protocol.MaskRule{{Scope: "all-ip", Method: "cryptopan", KeyID: "sample"}}}, "eve"))
	out, err := Enforce(p, "eve", []byte(`{"timestamp":"2024-01-01T00:00:00Z","event_type":"x","src_ip":"128.11.68.132","note":"via 129.118.74.4"}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"timestamp":"2024-01-01T00:00:00Z","event_type":"x","src_ip":"135.242.180.132","note":"via 134.136.186.123"}`; string(out) != want {
		t.Errorf("got  %s\nwant %s", out, want)
	}
}

func TestEnforcerBadRecords(t *testing.T) {
	pol := &protocol.Policy{Masking: []protocol.MaskRule{{Scope: "public-ip", Method: "truncate", Bits: 8}}}
	tests := []struct {
		format, in string
		refined    int64
		badLines   []int
	}{
		{"eve", "{\"timestamp\":\"2024-01-01T00:00:00Z\",\"event_type\":\"a\",\"src_ip\":\"1.2.3.4\"}\n{\"timestamp\":\n\n[1]\n{\"timestamp\":\"2024-01-01T00:00:00Z\",\"event_type\":\"b\"}\n", 2, []int{2, 4}},
		{"eve", "{\"event_type\":\"a\"}\n" + strings.Repeat("x", MaxRecordSize+10) + "\n{\"timestamp\":\"t\",\"event_type\":\"b\"}", 1, []int{1, 2}},
		{"idmefv2", "{\"Version\":\"2.D.V06\",\"ID\":\"a\",\"CreateTime\":\"2024-01-01T00:00:00Z\",\"Analyzer\":{}}\ngarbage line\n{\"Version\":\"1.0\",\"ID\":\"a\",\"CreateTime\":\"x\",\"Analyzer\":{}}\n{\n \"Version\":\"2.D.V05\",\"ID\":\"b\",\n \"CreateTime\":\"x\",\"Analyzer\":{\"IP\":\"8.8.8.8\"}}", 2, []int{2, 3}},
		{"idmef", "<IDMEF-Message xmlns=\"http://iana.org/idmef\"><Alert/></IDMEF-Message>\n<IDMEF-Message xmlns=\"http://iana.org/idmef\"><Alert><bad></Alert></IDMEF-Message>\n<IDMEF-Message xmlns=\"urn:other\"/>\n<IDMEF-Message xmlns=\"http://iana.org/idmef\"><Alert/><Alert/></IDMEF-Message>\n<IDMEF-Message xmlns=\"http://iana.org/idmef\"><Heartbeat/></IDMEF-Message>", 2, []int{2, 3, 4}},
		{"syslog", "<34>1 2003-10-11T22:14:15.003Z host su - ID47 - ok\nnot syslog\n<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!\n", 2, []int{2}},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			p := mustCompile(t, ssaFor(pol, tt.format))
			_, st := runAll(t, p, tt.format, []byte(tt.in))
			var lines []int
			for _, b := range st.Bad {
				lines = append(lines, b.Line)
				if b.Err == nil || b.Error() == "" {
					t.Errorf("bad record without error: %+v", b)
				}
			}
			if st.Refined != tt.refined || st.Malformed != int64(len(tt.badLines)) || !equalInts(lines, tt.badLines) {
				t.Errorf("refined %d malformed %d at lines %v; want %d, lines %v (%v)", st.Refined, st.Malformed, lines, tt.refined, tt.badLines, st.Bad)
			}
		})
	}
}

func equalInts(a, b []int) bool {
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

func TestFilterFailsClosed(t *testing.T) {
	tests := []struct {
		expr        string
		kept, error int64
	}{
		{`r["source.port"] == 80`, 1, 1},                       // the stats record has no port: excluded as an error
		{`"source.port" in r && r["source.port"] == 80`, 1, 0}, // has()-style guard
		{`r["@timestamp"] > timestamp("2021-01-01T00:00:00Z")`, 3, 0},
		{`"81.2.69.192" in r["related.ip"]`, 1, 0},
		{`r["network.transport"] == "tcp" && r["event.kind"] == "flow"`, 2, 0},
	}
	in := append(readTestdata(t, "eve/test-eve-6-0.jsonl"), []byte(`{"timestamp":"2018-07-05T15:51:23.009510-0400","event_type":"stats","stats":{"uptime":5400}}`+"\n")...)
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			p := mustCompile(t, ssaFor(&protocol.Policy{Filtering: []protocol.Filter{{Expr: tt.expr}}}, "eve"))
			_, st := runAll(t, p, "eve", in)
			if st.Refined != tt.kept || st.FilterErrors != tt.error {
				t.Errorf("kept %d errors %d, want %d and %d", st.Refined, st.FilterErrors, tt.kept, tt.error)
			}
		})
	}
}

// TestSchedule: the schedule is when sharing happens (clause 9.2), not a limit on the
// records' own time. The sample's records are of 2021 and 2024; the schedule is 2021.
func TestSchedule(t *testing.T) {
	s := ssaFor(nil, "eve")
	s.Schedule = protocol.Schedule{Start: 1609459200, End: 1640995200} // 2021
	p := mustCompile(t, s)
	in := readTestdata(t, "eve/test-eve-6-0.jsonl")
	for _, tc := range []struct {
		name             string
		now              time.Time
		refined, outside int64
	}{
		{"before the start", time.Date(2020, 12, 31, 23, 59, 59, 0, time.UTC), 0, 3},
		{"at the start", time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC), 3, 0},
		{"inside", time.Date(2021, 6, 1, 0, 0, 0, 0, time.UTC), 3, 0},
		{"at the end", time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC), 0, 3},
		{"after the end", time.Date(2024, 8, 1, 0, 0, 0, 0, time.UTC), 0, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := NewEnforcer(p, "eve", Config{Now: func() time.Time { return tc.now }})
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			st, err := e.Run(context.Background(), bytes.NewReader(in), &out)
			if err != nil {
				t.Fatal(err)
			}
			if st.Records != 3 || st.Refined != tc.refined || st.OutsideSchedule != tc.outside || st.Malformed != 0 {
				t.Errorf("stats %+v: want %d refined, %d outside the schedule", st, tc.refined, tc.outside)
			}
			if n := int64(bytes.Count(out.Bytes(), []byte("\n"))); n != tc.refined {
				t.Errorf("%d records written, want %d", n, tc.refined)
			}
		})
	}
	// A record of 2024 sent in 2021 complies: its own time is not the schedule's business.
	if f := Verify(p, "eve", bytes.SplitN(in, []byte("\n"), 3)[1]); len(f) != 0 {
		t.Errorf("Verify of a record dated after the schedule = %v, want none", f)
	}
	if f := Verify(p, "idmef", nil); len(f) != 1 || f[0].Code != FindingWrongFormat {
		t.Errorf("Verify of an unagreed format = %v", f)
	}
	if f := Verify(p, "eve", []byte("<34>1 - - - - - -")); len(f) != 1 || f[0].Code != FindingWrongFormat {
		t.Errorf("Verify of syslog as eve = %v", f)
	}
}

// TestEventTimeFilter: a limit on the records' own time is a filter on @timestamp.
func TestEventTimeFilter(t *testing.T) {
	const expr = `r["@timestamp"] < timestamp("2022-01-01T00:00:00Z")`
	p := mustCompile(t, ssaFor(&protocol.Policy{Filtering: []protocol.Filter{{Expr: expr}}}, "eve"))
	in := readTestdata(t, "eve/test-eve-6-0.jsonl")
	_, st := runAll(t, p, "eve", in)
	if st.Records != 3 || st.Refined != 1 || st.Filtered != 2 || st.FilterErrors != 0 || st.OutsideSchedule != 0 {
		t.Errorf("stats %+v: want the record of 2021 refined, the two of 2024 filtered", st)
	}
	recs := bytes.SplitN(in, []byte("\n"), 3)
	if f := Verify(p, "eve", recs[0]); len(f) != 0 {
		t.Errorf("Verify of the record of 2021 = %v", f)
	}
	if f := Verify(p, "eve", recs[1]); len(f) != 1 || f[0].Code != FindingFilterExcluded {
		t.Errorf("Verify of a record of 2024 = %v, want filter-excluded", f)
	}
}

// TestSummaryUntimed: under a summarisation a record without a time is counted as such.
func TestSummaryUntimed(t *testing.T) {
	p := mustCompile(t, ssaFor(&protocol.Policy{Summarization: &protocol.Summarization{TopN: 3, Window: 60, GroupBy: "log.syslog.severity.code", RankBy: protocol.RankByCount}}, "syslog"))
	e, err := NewEnforcer(p, "syslog", Config{}) // no Year: RFC 3164 times stay unknown
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Refine(nil, []byte("<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8")); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.Untimed != 1 || st.OutsideSchedule != 0 {
		t.Errorf("stats %+v: want 1 untimed", st)
	}
}

func TestSpaceSavingBound(t *testing.T) {
	s := newSpaceSaving(100)
	truth := map[string]int64{}
	var total int64
	for i := range 100000 {
		k := itoa(i % 7919)
		w := int64(1 + i%5)
		if i%10 == 0 {
			k = "heavy" + itoa(i%3)
		}
		s.add(k, w)
		truth[k] += w
		total += w
	}
	for _, e := range s.top(10) {
		if e.count < truth[e.key] || e.count-e.error > truth[e.key] || e.error > total/100 {
			t.Errorf("%s: count %d error %d, true %d, bound %d", e.key, e.count, e.error, truth[e.key], total/100)
		}
	}
	if got := s.top(3); !strings.HasPrefix(got[0].key, "heavy") || !strings.HasPrefix(got[2].key, "heavy") {
		t.Errorf("heavy hitters not on top: %+v", got)
	}
}

// TestCompilerShared compiles one SSA from several goroutines with one Compiler: each SSP
// is the one Compile makes alone (same hash, same records kept), and the expression is
// compiled once for all of them.
func TestCompilerShared(t *testing.T) {
	s := ssaFor(&protocol.Policy{Filtering: []protocol.Filter{{Expr: `r["event.kind"] == "alert"`}}}, "eve")
	want := mustCompile(t, s)
	c := NewCompiler(4)
	const n = 8
	got := make([]*SSP, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { got[i], errs[i] = c.Compile(s, nil) })
	}
	wg.Wait()
	in := readTestdata(t, "eve/test-eve-small.jsonl")
	wantOut, _ := runAll(t, want, protocol.FormatEVE, in)
	for i, p := range got {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if p.Hash() != want.Hash() {
			t.Fatalf("SSP %d: hash %x, want %x", i, p.Hash(), want.Hash())
		}
		if out, _ := runAll(t, p, protocol.FormatEVE, in); !bytes.Equal(out, wantOut) {
			t.Fatalf("SSP %d refines records differently", i)
		}
	}
	if c.lru.Len() != 1 || got[0].filters[0] != got[n-1].filters[0] {
		t.Errorf("compiler keeps %d expressions; SSPs share the compiled one: %v", c.lru.Len(), got[0].filters[0] == got[n-1].filters[0])
	}
}

// TestRequesterKeyIsNotKept: a requester that asks for cryptopan or hmac under a key ID of
// its own (naming a key it could use to invert or recompute the masking) gets a proposal
// without that key ID; the provider masks with its secret key, and the requester cannot
// reproduce the provider's output, not even with the key it named.
func TestRequesterKeyIsNotKept(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	const requesterKey = "requester-key"
	requesterKeys := StaticKey(bytes.Repeat([]byte{0xab}, 32)) // what the requester would mask with
	raw := []byte(`{"timestamp":"2026-11-23T12:00:00Z","event_type":"alert","src_ip":"1.1.1.1","dest_ip":"8.8.4.4","src_port":1,"dest_port":2,"proto":"TCP","alert":{"signature":"x","signature_id":1,"severity":1}}`)
	cases := []struct {
		name string
		rule protocol.MaskRule // the request's only masking rule; the offer truncates public-ip by 8 bits
	}{
		{"cryptopan instead of the offer's truncation", protocol.MaskRule{Scope: protocol.ScopePublicIP, Method: protocol.MaskCryptoPAn, KeyID: requesterKey}},
		{"hmac on every address, applied before the truncation", protocol.MaskRule{Scope: protocol.ScopeAllIP, Method: protocol.MaskHMAC, KeyID: requesterKey}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			offer, err := protocol.ParseOfferYAML(protocol.ExampleProvider, now)
			if err != nil {
				t.Fatal(err)
			}
			req, err := protocol.ParseSSAYAML(protocol.ExampleRequester, now)
			if err != nil {
				t.Fatal(err)
			}
			req.ID, req.Status = "ssa-requester-key", protocol.StatusProposal
			req.Policy.Masking = []protocol.MaskRule{tc.rule}
			p, conflicts := protocol.Meet(req, offer, protocol.FromTime(now))
			if conflicts != nil {
				t.Fatalf("meet: %v", conflicts)
			}
			for _, r := range p.Policy.Masking {
				if r.KeyID != "" {
					t.Fatalf("the proposal keeps a key ID: %+v", r)
				}
			}
			if rs := protocol.Satisfies(p, &offer.Terms); len(rs) > 0 {
				t.Fatalf("the proposal fails the offer: %v", rs)
			}
			if err := Check(p); err != nil {
				t.Fatalf("Check: %v", err)
			}
			prov, err := Compile(p, DerivedKeys([]byte("provider long-term secret 123456")))
			if err != nil {
				t.Fatal(err)
			}
			shared, err := Enforce(prov, protocol.FormatEVE, raw)
			if err != nil {
				t.Fatal(err)
			}
			if len(shared) == 0 || bytes.Contains(shared, []byte("1.1.1.1")) || bytes.Contains(shared, []byte("8.8.4.4")) {
				t.Fatalf("the provider shares %s", shared)
			}
			if reqSide, err := Compile(p, nil); err != nil || reqSide.CanEnforce() {
				t.Fatalf("the requester's SSP can enforce: %v", err)
			}
			// The requester's best attempt: the proposal as it would be with its key ID kept.
			forged := p.Clone()
			for i := range forged.Policy.Masking {
				if forged.Policy.Masking[i].Target() == tc.rule.Target() {
					forged.Policy.Masking[i].KeyID = requesterKey
				}
			}
			mine, err := Compile(forged, requesterKeys)
			if err != nil {
				t.Fatal(err)
			}
			again, err := Enforce(mine, protocol.FormatEVE, raw)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(again, shared) {
				t.Fatalf("the requester reproduces the provider's output with its own key: %s", shared)
			}
		})
	}
}

// TestFilteredBy: each record a filter leaves out is counted against the first filter that
// excluded it, by its index in the policy's filtering list; a filter that cannot be evaluated
// is a filter error, counted against none; the counts sum to Filtered.
func TestFilteredBy(t *testing.T) {
	in := []byte(`{"timestamp":"2024-07-01T00:00:00.000000+0000","event_type":"stats","stats":{"uptime":1}}
{"timestamp":"2024-07-01T00:00:01.000000+0000","event_type":"alert","src_ip":"8.8.8.8","src_port":80,"dest_ip":"10.0.0.1","dest_port":443,"proto":"TCP","alert":{"signature":"ET SCAN nmap"}}
{"timestamp":"2024-07-01T00:00:02.000000+0000","event_type":"alert","src_ip":"8.8.8.8","src_port":5000,"dest_ip":"10.0.0.1","dest_port":443,"proto":"TCP","alert":{"signature":"ET SCAN nmap"}}
{"timestamp":"2024-07-01T00:00:03.000000+0000","event_type":"alert","src_ip":"8.8.8.8","src_port":6000,"dest_ip":"10.0.0.1","dest_port":443,"proto":"TCP","alert":{"signature":"GPL ATTACK"}}
{"timestamp":"2024-07-01T00:00:04.000000+0000","event_type":"alert","src_ip":"8.8.8.8","src_port":7000,"dest_ip":"10.0.0.1","dest_port":443,"proto":"TCP","alert":{"signature":"GPL ATTACK"}}
`)
	const (
		notStats = `r["event.kind"] != "stats"`
		highPort = `r["source.port"] > 1024`
		scan     = `r["rule.name"].contains("SCAN")`
	)
	for _, tc := range []struct {
		name    string
		filters []string
		want    []int64
		errs    int64
		refined int64
	}{
		{"none", nil, nil, 0, 5},
		{"one", []string{highPort}, []int64{1}, 1, 3}, // the stats record has no source.port: an error
		{"three", []string{notStats, highPort, scan}, []int64{1, 1, 2}, 0, 1},
		{"first wins", []string{scan, notStats, highPort}, []int64{2, 0, 1}, 1, 1}, // the stats record has no rule.name
	} {
		t.Run(tc.name, func(t *testing.T) {
			var pol protocol.Policy
			for _, f := range tc.filters {
				pol.Filtering = append(pol.Filtering, protocol.Filter{Expr: f})
			}
			_, st := runAll(t, mustCompile(t, ssaFor(&pol, "eve")), "eve", in)
			var sum int64
			for _, n := range st.FilteredBy {
				sum += n
			}
			if !slices.Equal(st.FilteredBy, tc.want) || st.FilterErrors != tc.errs || st.Refined != tc.refined || sum != st.Filtered {
				t.Errorf("stats %+v: want FilteredBy %v, %d filter errors, %d refined, FilteredBy summing to Filtered",
					st, tc.want, tc.errs, tc.refined)
			}
		})
	}
}
