package policy

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ssanet/ssanet/protocol"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/golden")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file:\n got: %s\nwant: %s", name, got, want)
	}
}

func eveSamples(t *testing.T) []byte {
	var all []byte
	for _, f := range []string{"test-eve-small.jsonl", "test-eve-6-0.jsonl", "test-eve-metadata.jsonl"} {
		b := readTestdata(t, "eve/"+f)
		all = append(all, b...)
		if !bytes.HasSuffix(all, []byte("\n")) {
			all = append(all, '\n')
		}
	}
	return all
}

// Spec example 1 (clause 9.2 item 5): "hide all the public IP addresses within the
// exchanging security information by using 8-bit masking", in every format.
func TestGoldenMaskPublicIP8(t *testing.T) {
	pol := &protocol.Policy{Masking: []protocol.MaskRule{{Scope: protocol.ScopePublicIP, Method: protocol.MaskTruncate, Bits: 8}}}
	tests := []struct {
		format, in, golden string
		input              func(t *testing.T) []byte
	}{
		{format: "eve", golden: "mask8-eve.jsonl", input: eveSamples},
		{format: "idmef", in: "idmef/secef-gateway-test-alert.xml", golden: "mask8-idmef-secef.xml"},
		{format: "idmef", in: "idmef/rfc4765-portscan.xml", golden: "mask8-idmef-rfc4765.xml"},
		{format: "iodef", in: "iodef/rfc7970-scan.xml", golden: "mask8-iodef.xml"},
		{format: "idmefv2", in: "idmefv2/attachment-idmefv2.json", golden: "mask8-idmefv2.jsonl"},
		{format: "syslog", in: "syslog/rfc5424-examples.log", golden: "mask8-syslog5424.log"},
		{format: "syslog", in: "syslog/rfc3164-examples.log", golden: "mask8-syslog3164.log"},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			p := mustCompile(t, ssaFor(pol, tt.format))
			var in []byte
			if tt.input != nil {
				in = tt.input(t)
			} else {
				in = readTestdata(t, tt.in)
			}
			out, st := runAll(t, p, tt.format, in)
			if st.Malformed != 0 || st.Refined != st.Records {
				t.Fatalf("stats %+v", st)
			}
			for _, ip := range []string{"175.16.199.1", "81.2.69.192", "52.222.141.99", "92.222.9.62", "2a02:c7f:1234::7", "81.2.69.160"} {
				if bytes.Contains(out, []byte(ip)) {
					t.Errorf("public address %s survived", ip)
				}
			}
			if f := VerifyStreamBytes(t, p, tt.format, out); len(f) != 0 {
				t.Errorf("Verify: %v", f)
			}
			golden(t, tt.golden, out)
		})
	}
	// The requester's check catches the raw records.
	p := mustCompile(t, ssaFor(pol, "idmef"))
	f := Verify(p, "idmef", readTestdata(t, "idmef/secef-gateway-test-alert.xml"))
	if len(f) != 1 || f[0].Code != FindingNotTruncated || !strings.Contains(f[0].Text, "92.222.9.62") {
		t.Errorf("Verify of the raw IDMEF alert = %v, want one not-truncated finding on 92.222.9.62", f)
	}
}

// VerifyStreamBytes verifies a refined stream and flattens the findings.
func VerifyStreamBytes(t *testing.T, p *SSP, format string, out []byte) []Finding {
	t.Helper()
	recs, _, err := VerifyStream(t.Context(), p, format, bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	var all []Finding
	for _, r := range recs {
		all = append(all, r.Findings...)
	}
	return all
}

// Spec example 2: "only data where the IP address of the attacking system is 1.1.1.1".
func TestGoldenFilterAttacker(t *testing.T) {
	in := eveSamples(t)
	// The samples hold no 1.1.1.1: add a copy of the metadata alert coming from it.
	alert := readTestdata(t, "eve/test-eve-metadata.jsonl")
	in = append(in, bytes.ReplaceAll(alert, []byte("52.222.141.99"), []byte("1.1.1.1"))...)
	in = append(in, '\n')
	pol := &protocol.Policy{Filtering: []protocol.Filter{{Expr: `r["source.ip"] == "1.1.1.1"`}}}
	p := mustCompile(t, ssaFor(pol, "eve"))
	out, st := runAll(t, p, "eve", in)
	// Stats records have no src_ip: the filter cannot read it and excludes them.
	if st.Refined != 1 || st.Records != 17 || st.Filtered+st.FilterErrors != 16 {
		t.Fatalf("stats %+v", st)
	}
	if f := VerifyStreamBytes(t, p, "eve", out); len(f) != 0 {
		t.Errorf("Verify: %v", f)
	}
	if f := Verify(p, "eve", alert); len(f) != 1 || f[0].Code != FindingFilterExcluded {
		t.Errorf("Verify of an excluded record = %v, want filter-excluded", f)
	}
	golden(t, "filter-attacker-eve.jsonl", out)

	// The same on IDMEF, IODEF and IDMEFv2 with their own attackers and the same expression.
	for _, tt := range []struct{ format, in, from string }{
		{"idmef", "idmef/rfc4765-portscan.xml", "81.2.69.192"},
		{"iodef", "iodef/rfc7970-scan.xml", "175.16.199.1"},
	} {
		raw := readTestdata(t, tt.in)
		p := mustCompile(t, ssaFor(pol, tt.format))
		if out, st := runAll(t, p, tt.format, raw); st.Refined != 0 || len(out) != 0 {
			t.Errorf("%s: attacker %s passed the filter", tt.format, tt.from)
		}
		if out, st := runAll(t, p, tt.format, bytes.ReplaceAll(raw, []byte(tt.from), []byte("1.1.1.1"))); st.Refined != 1 || !bytes.Contains(out, []byte("1.1.1.1")) {
			t.Errorf("%s: attacker 1.1.1.1 filtered out: %+v", tt.format, st)
		}
	}
}

// Spec example 3: "statistical information on the IP addresses of the attacking system
// that rank in top 10 in the traffic volume".
func TestGoldenTop10ByVolume(t *testing.T) {
	pol := &protocol.Policy{
		Masking:       []protocol.MaskRule{{Scope: protocol.ScopePublicIP, Method: protocol.MaskTruncate, Bits: 8}},
		Summarization: &protocol.Summarization{GroupBy: "source.ip", RankBy: "source.bytes", TopN: 10, Window: 86400},
	}
	p := mustCompile(t, ssaFor(pol, "eve"))
	in := eveSamples(t)
	// More attackers than the top 10, in one window: 12 senders of distinct volumes.
	for i := range 12 {
		in = append(in, []byte(`{"timestamp":"2024-07-30T18:00:00.000000+0000","event_type":"flow","src_ip":"81.2.`+itoa(i)+`.9","dest_ip":"10.0.0.1","proto":"TCP","flow":{"bytes_toserver":`+itoa(1000*(i+1))+`,"bytes_toclient":1}}`+"\n")...)
	}
	out, st := runAll(t, p, "eve", in)
	if st.Refined != 0 || st.Summaries == 0 {
		t.Fatalf("stats %+v", st)
	}
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	var last summaryRecord
	if err := json.Unmarshal(lines[len(lines)-1], &last); err != nil {
		t.Fatal(err)
	}
	s := last.Summary
	if len(s.Top) != 10 || s.Top[0].Value != "81.2.11.0" || s.Top[0].Score != 12000 || s.Top[5].Value != "10.1.22.212" || s.Top[9].Value != "81.2.3.0" {
		t.Errorf("last window top = %+v", s.Top)
	}
	if f := VerifyStreamBytes(t, p, "eve", out); len(f) != 0 {
		t.Errorf("Verify: %v", f)
	}
	// A provider that sends more than N values is caught.
	s.Top = append(s.Top, TopValue{Value: "81.2.50.0", Score: 1})
	b, _ := json.Marshal(last)
	if f := Verify(p, "eve", b); len(f) != 1 || f[0].Code != FindingTopTooLong {
		t.Errorf("Verify of an 11-long top 10 = %v", f)
	}
	golden(t, "top10-volume-eve.jsonl", out)
}

func itoa(i int) string { return jsonInt(i) }

func jsonInt(i int) string { b, _ := json.Marshal(i); return string(b) }

// Spec example 4: handling — a TLP label with its retention limit, carried and enforced.
func TestGoldenHandling(t *testing.T) {
	ids := map[string]string{}
	for _, f := range []string{"tlp-clear.json", "tlp-amber.json", "tlp-amber+strict.json"} {
		var bundle struct {
			Objects []struct {
				Type string `json:"type"`
				ID   string `json:"id"`
				Name string `json:"name"`
			} `json:"objects"`
		}
		if err := json.Unmarshal(readTestdata(t, "tlp/"+f), &bundle); err != nil {
			t.Fatal(err)
		}
		for _, o := range bundle.Objects {
			if o.Type == "marking-definition" {
				ids[strings.TrimPrefix(o.Name, "TLP:")] = o.ID
			}
		}
	}
	schema := string(readTestdata(t, "tlp/tlp2.0-marking-definition.schema.json"))
	for _, l := range protocol.TLPLevels {
		id, ok := TLPMarkingID(l)
		if !ok {
			t.Fatalf("no marking id for %s", l)
		}
		if want, ok := ids[l]; ok && want != id {
			t.Errorf("TLP:%s id %s, the STIX example says %s", l, id, want)
		}
		if !strings.Contains(schema, id) {
			t.Errorf("TLP:%s id %s is not in the TLP 2.0 schema", l, id)
		}
	}

	pol := &protocol.Policy{Handling: &protocol.Handling{TLP: protocol.TLPAmberStrict, Retention: 30 * 86400}}
	p := mustCompile(t, ssaFor(pol, "eve"))
	m, err := json.Marshal(p.Marking())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "handling-marking.json", append(m, '\n'))

	recv := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		after time.Duration
		want  bool
	}{{0, false}, {29 * 24 * time.Hour, false}, {30*24*time.Hour - time.Second, false}, {30 * 24 * time.Hour, true}, {400 * 24 * time.Hour, true}} {
		if got := Expired(p, recv, recv.Add(tt.after)); got != tt.want {
			t.Errorf("Expired after %v = %v, want %v", tt.after, got, tt.want)
		}
	}
	for _, tt := range []struct {
		tlp, redistribution, to string
		ok                      bool
	}{
		{protocol.TLPAmberStrict, "", RecipientOrganisation, true},
		{protocol.TLPAmberStrict, "", RecipientCommunity, false},
		{protocol.TLPClear, "", RecipientAny, true},
		{protocol.TLPGreen, "", RecipientCommunity, true},
		{protocol.TLPGreen, "", RecipientAny, false},
		{protocol.TLPGreen, "organisation", RecipientCommunity, false},
		{protocol.TLPRed, "any", RecipientOrganisation, false},
		{"", "community", RecipientCommunity, true},
		{"", "", RecipientOrganisation, false},
		{protocol.TLPClear, "", "martians", false},
	} {
		pol := &protocol.Policy{Handling: &protocol.Handling{TLP: tt.tlp, Redistribution: tt.redistribution}}
		p := mustCompile(t, ssaFor(pol, "eve"))
		if err := MayRedistribute(p, tt.to); (err == nil) != tt.ok {
			t.Errorf("TLP %q redistribution %q to %s: %v, want ok=%v", tt.tlp, tt.redistribution, tt.to, err, tt.ok)
		}
	}
	noHandling := mustCompile(t, ssaFor(nil, "eve"))
	if Expired(noHandling, recv, recv.Add(1e6*time.Hour)) {
		t.Error("records expire without a retention limit")
	}
}
