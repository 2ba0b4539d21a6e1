package policy

import (
	"bytes"
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
	cases := []equivCase{
		{"bench", benchPolicy()},
		{"truncate all 24", &protocol.Policy{Masking: maskRules(protocol.ScopeAllIP, protocol.MaskTruncate, 24)}},
		{"cryptopan public", &protocol.Policy{Masking: []protocol.MaskRule{{Scope: protocol.ScopePublicIP, Method: protocol.MaskCryptoPAn, KeyID: "sample"}}}},
		{"hmac public", &protocol.Policy{Masking: maskRules(protocol.ScopePublicIP, protocol.MaskHMAC, 0)}},
		{"remove all", &protocol.Policy{Masking: maskRules(protocol.ScopeAllIP, protocol.MaskRemove, 0)}},
		{"hmac fields", &protocol.Policy{Masking: maskRules(protocol.ScopeFields, protocol.MaskHMAC, 0, "rule.name", "url.original", "source.ip", "source.port", "@timestamp")}},
		{"remove fields", &protocol.Policy{Masking: maskRules(protocol.ScopeFields, protocol.MaskRemove, 0, "destination.ip", "dns.question.name", "tls.client.server_name")}},
		{"truncate fields", &protocol.Policy{Masking: maskRules(protocol.ScopeFields, protocol.MaskTruncate, 16, "source.ip", "destination.ip")}},
		{"related.ip", &protocol.Policy{Masking: maskRules(protocol.ScopePublicIP, protocol.MaskTruncate, 8),
			Filtering: []protocol.Filter{{Expr: `r["related.ip"].exists(ip, ip.endsWith(".0"))`}}}},
	}
	var all []byte
	for _, c := range append(cases, viewCases(protocol.FormatEVE)...) {
		all = append(all, equivRun(t, protocol.FormatEVE, in, c)...)
	}
	golden(t, "equiv-eve.txt", all)
}

// equivCase is one policy an equivalence test refines its records under.
type equivCase struct {
	name string
	pol  *protocol.Policy
}

// maskRules is one masking rule.
func maskRules(scope, method string, bits uint8, fields ...string) []protocol.MaskRule {
	return []protocol.MaskRule{{Scope: scope, Method: method, Bits: bits, Fields: fields}}
}

// viewFields lists the fields of the view of format, sorted.
func viewFields(format string) (*formatSpec, []string) {
	spec, _ := lookupFormat(format)
	fields := make([]string, 0, len(spec.fields))
	for f := range spec.fields {
		fields = append(fields, f)
	}
	slices.Sort(fields)
	return spec, fields
}

// viewCases are, for every field of the view of format, a filter that reads it and a
// summary grouped by it (but for related.ip, a list): they compare the views the codec
// captures, as read and as written.
func viewCases(format string) []equivCase {
	spec, fields := viewFields(format)
	rankBy := "source.bytes"
	if _, ok := spec.fields[rankBy]; !ok {
		rankBy = protocol.RankByCount
	}
	var cases []equivCase
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
		cases = append(cases, equivCase{"filter " + f, &protocol.Policy{Filtering: []protocol.Filter{{Expr: fmt.Sprintf(`%q in r`, f)}, {Expr: expr}}}})
		if spec.fields[f] != kindIPList {
			cases = append(cases, equivCase{"group by " + f, &protocol.Policy{
				Masking:       maskRules(protocol.ScopePublicIP, protocol.MaskTruncate, 8),
				Summarization: &protocol.Summarization{GroupBy: f, RankBy: rankBy, TopN: 1000, Window: 86400 * 365 * 10}}})
		}
	}
	return cases
}

// equivRun refines in, records of format, under c and returns the case's part of a golden
// file: its name, its counts and its output.
func equivRun(t *testing.T, format string, in []byte, c equivCase) []byte {
	t.Helper()
	p := mustCompile(t, ssaFor(c.pol, format))
	out, st := runAll(t, p, format, in)
	st.Bad = nil
	s, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if c.pol.Filtering != nil && c.pol.Masking == nil {
		// A filter case keeps some of the records as read: their digest is enough.
		out = fmt.Appendf(nil, "sha256 %x\n", sha256.Sum256(out))
	}
	return fmt.Appendf(nil, "== %s\n%s\n%s", c.name, s, out)
}

// TestGoldenCodecEquivalence is TestGoldenEVEEquivalence for the XML and syslog formats: every
// sample of testdata, the benchmark's records and records made to reach the corners of the
// codecs (CDATA, comments and processing instructions in bound elements, escapes, white
// space, malformed documents and lines) are refined under masking rules of every scope and
// method, alone and together, a filter on every field and a summary grouped by every field.
// The output, the counts and the requester's findings on the records as read (but under a
// summarisation) and as written are compared with testdata/golden/equiv-<format>.txt,
// written before the work of issue 19 on these codecs: they must stay the same.
func TestGoldenCodecEquivalence(t *testing.T) {
	inputs := map[string][]byte{
		protocol.FormatIDMEF: concatRecords(t, []string{"idmef/secef-gateway-test-alert.xml", "idmef/rfc4765-portscan.xml"},
			benchRecords(t, protocol.FormatIDMEF, 4), idmefCorners),
		protocol.FormatIODEF: concatRecords(t, []string{"iodef/rfc7970-scan.xml"}, benchRecords(t, protocol.FormatIODEF, 2), iodefCorners),
		protocol.FormatSyslog: concatRecords(t, []string{"syslog/rfc5424-examples.log", "syslog/rfc5424-examples-as-printed.log", "syslog/rfc3164-examples.log"},
			benchRecords(t, protocol.FormatSyslog, 8), syslogCorners),
	}
	for _, format := range []string{protocol.FormatIDMEF, protocol.FormatIODEF, protocol.FormatSyslog} {
		t.Run(format, func(t *testing.T) {
			in := inputs[format]
			spec, fields := viewFields(format)
			var maskable, ips []string
			for _, f := range fields {
				if spec.maskable(f) {
					maskable = append(maskable, f)
					if spec.fields[f] == kindIP {
						ips = append(ips, f)
					}
				}
			}
			removed := ips
			if len(ips) == 0 {
				removed = maskable // syslog: addresses are in text, no field is one
			}
			cases := []equivCase{
				{"bench", func() *protocol.Policy {
					p := benchPolicy()
					p.Filtering[0].Expr = benchSamples[format].filters[0].expr
					return p
				}()},
				{"truncate public 8", &protocol.Policy{Masking: maskRules(protocol.ScopePublicIP, protocol.MaskTruncate, 8)}},
				{"truncate all 24", &protocol.Policy{Masking: maskRules(protocol.ScopeAllIP, protocol.MaskTruncate, 24)}},
				{"cryptopan public", &protocol.Policy{Masking: []protocol.MaskRule{{Scope: protocol.ScopePublicIP, Method: protocol.MaskCryptoPAn, KeyID: "sample"}}}},
				{"cryptopan all", &protocol.Policy{Masking: []protocol.MaskRule{{Scope: protocol.ScopeAllIP, Method: protocol.MaskCryptoPAn, KeyID: "sample"}}}},
				{"hmac public", &protocol.Policy{Masking: maskRules(protocol.ScopePublicIP, protocol.MaskHMAC, 0)}},
				{"hmac all", &protocol.Policy{Masking: maskRules(protocol.ScopeAllIP, protocol.MaskHMAC, 0)}},
				{"remove public", &protocol.Policy{Masking: maskRules(protocol.ScopePublicIP, protocol.MaskRemove, 0)}},
				{"remove all", &protocol.Policy{Masking: maskRules(protocol.ScopeAllIP, protocol.MaskRemove, 0)}},
				{"hmac fields", &protocol.Policy{Masking: maskRules(protocol.ScopeFields, protocol.MaskHMAC, 0, maskable...)}},
				{"remove fields", &protocol.Policy{Masking: maskRules(protocol.ScopeFields, protocol.MaskRemove, 0, maskable...)}},
				{"none", &protocol.Policy{Masking: maskRules(protocol.ScopeAllIP, protocol.MaskNone, 0)}},
				{"three rules", &protocol.Policy{Masking: []protocol.MaskRule{
					{Scope: protocol.ScopeFields, Method: protocol.MaskRemove, Fields: removed[:1]},
					{Scope: protocol.ScopePublicIP, Method: protocol.MaskHMAC},
					{Scope: protocol.ScopeAllIP, Method: protocol.MaskTruncate, Bits: 24},
				}}},
				{"related.ip", &protocol.Policy{Masking: maskRules(protocol.ScopePublicIP, protocol.MaskTruncate, 8),
					Filtering: []protocol.Filter{{Expr: `r["related.ip"].exists(ip, ip.endsWith(".0"))`}}}},
			}
			if len(ips) > 0 {
				cases = append(cases, equivCase{"truncate fields", &protocol.Policy{Masking: maskRules(protocol.ScopeFields, protocol.MaskTruncate, 16, ips...)}})
			}
			var all []byte
			for _, c := range append(cases, viewCases(format)...) {
				all = append(all, equivRun(t, format, in, c)...)
				p := mustCompile(t, ssaFor(c.pol, format))
				out, _ := runAll(t, p, format, in)
				sides := []struct {
					name string
					recs []byte
				}{{"written", out}}
				if c.pol.Summarization == nil {
					// Under a summarisation every record as read is one not summarised.
					sides = append(sides, sides[0])
					sides[0].name, sides[0].recs = "read", in
				}
				for _, side := range sides {
					recs, n, err := VerifyStream(t.Context(), p, format, bytes.NewReader(side.recs))
					if err != nil {
						t.Fatal(err)
					}
					all = fmt.Appendf(all, "-- findings as %s: %d records\n", side.name, n)
					for _, r := range recs {
						all = fmt.Appendf(all, "line %d byte %d: %q\n", r.Line, r.Offset, r.Findings)
					}
				}
			}
			golden(t, "equiv-"+format+".txt", all)
		})
	}
}

// concatRecords is the stream of the records of files, then of recs, then of corners, each
// ending with a newline.
func concatRecords(t *testing.T, files []string, recs [][]byte, corners string) []byte {
	var parts [][]byte
	for _, f := range files {
		parts = append(parts, readTestdata(t, f))
	}
	var all []byte
	for _, r := range append(append(parts, recs...), []byte(corners)) {
		all = append(all, r...)
		if !bytes.HasSuffix(all, []byte("\n")) {
			all = append(all, '\n')
		}
	}
	return all
}

// idmefCorners are IDMEF documents that reach the corners of the XML codec: a prolog with a
// DOCTYPE, the default namespace, escapes in attributes and text, CDATA, a comment and a
// processing instruction inside bound elements, an address split by a comment, white space
// around bound values, a bound element with no text, a heartbeat, and malformed documents
// last (two alerts, another root, an undeclared prefix, a wrong end tag).
const idmefCorners = `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE IDMEF-Message SYSTEM "idmef-message.dtd">
<IDMEF-Message xmlns="http://iana.org/idmef" version="1.0"><Alert messageid="m&amp;81.2.3.1"><Analyzer name="a &quot;81.2.3.2&quot;&#10;x&#9;y"><Node><name>  host 81.2.3.3 </name><Address><address><!-- was 81.2.3.4 -->81.2.3.5</address></Address></Node></Analyzer><CreateTime>2000-03-09T15:31:00-08:00</CreateTime><Source><Node><name/><Address category="ipv4-addr"><address>
  2a02:c7f:1234::8
</address></Address></Node><Service iana_protocol_name="TCP"><port> 8080 </port></Service><User><UserId><name>eve@81.2.3.6</name></UserId></User></Source><Target><Node><Address><address>81.2.<![CDATA[3.7]]></address></Address><Address><address>10.9.8.7</address></Address></Node><Service><port>x</port></Service><Process><name>sshd<?pi 81.2.3.8?></name></Process><File><name>/tmp/a&lt;b&gt;c</name></File></Target><Classification text="scan 81.2.3.9&#13;" ident="42"/><Assessment><Impact severity="low" type="recon"/></Assessment><AdditionalData><string>a &lt; b &gt; c &amp; 81.2.3.10	tab "quoted" 192.168.1.1 ::ffff:81.2.3.11</string></AdditionalData></Alert></IDMEF-Message>
<!-- between 81.2.3.12 -->
<idmef:IDMEF-Message xmlns:idmef="http://iana.org/idmef"><idmef:Heartbeat messageid="hb1"><idmef:Analyzer name="81.2.3.13"/><idmef:CreateTime>2001-01-01T00:00:00Z</idmef:CreateTime></idmef:Heartbeat></idmef:IDMEF-Message>
<IDMEF-Message xmlns="http://iana.org/idmef"><Alert messageid="1"/><Alert messageid="2"/></IDMEF-Message>
<Other xmlns="http://iana.org/idmef"/>
<idmef:IDMEF-Message><idmef:Alert/></idmef:IDMEF-Message>
<IDMEF-Message xmlns="http://iana.org/idmef"><Alert></Source></IDMEF-Message>
`

// iodefCorners are IODEF documents for the corners of the XML codec: version 1, both
// spellings of ip-protocol, a system of no category, several addresses, a time that is not
// one, and a document with two incidents last.
const iodefCorners = `<IODEF-Document version="1.00" xmlns="urn:ietf:params:xml:ns:iodef-1.0"><Incident purpose="mitigation"><IncidentID name="x">81.2.3.20</IncidentID><ReportTime>not a time 81.2.3.21</ReportTime><Description>  from 81.2.3.22 to 2a02:c7f::9  </Description><Assessment><Impact severity="high" type="dos"/></Assessment><EventData><Flow><System category="source"><Node><Address category="ipv4-addr">81.2.3.23</Address><Address category="ipv4-addr"> 81.2.3.24 </Address><NodeName>n81.2.3.25</NodeName></Node><Service ip_protocol="17"><Port>53</Port></Service></System><System><Node><Address>81.2.3.26</Address></Node></System><System category="target"><Node><Address>81.2.<!--c-->3.27</Address></Node><Service ip-protocol="1"/></System></Flow></EventData></Incident></IODEF-Document>
<IODEF-Document version="2.00" xmlns="urn:ietf:params:xml:ns:iodef-2.0"><Incident purpose="reporting"/><Incident purpose="reporting"/></IODEF-Document>
`

// syslogCorners are syslog lines for the corners of the syslog codec: addresses as host
// names, tags, PIDs and in structured data and messages, nil values, no message, an RFC 3164
// line with no tag, time stamps of every form, and malformed lines.
const syslogCorners = `<13>Feb  5 17:32:18 81.2.3.30 sshd[4242]: Failed password for root from 81.2.3.31 port 22 ssh2
<38>Mar 10 01:02:03 host sshd: Accepted publickey for bob from 2a02:c7f::31 port 50022
<38>Mar 10 01:02:03 host 81.2.3.32: tag is an address
<38>Mar 10 01:02:03 81.2.3.33 no tag at all, from 81.2.3.34
<191>Dec 31 23:59:59 h p[1]:
<34>1 2003-10-11T22:14:15.003Z 81.2.3.35 sshd 81.2.3.36 ID47 [origin ip="81.2.3.37" enterpriseId="32473"][x@1 a="\"81.2.3.38\"" b="\]"] from 81.2.3.39
<34>1 - - - - - -
<34>1 2003-10-11T22:14:15+02:00 h a p m - 
<34>1 2003-10-11T22:14:15.123456-07:00 h a p m [a@1 ip="81.2.3.40"]
<34>1 1985-04-12T23:20:50.52Z 81.2.3.41 - - - - 81.2.3.42
hello 81.2.3.43
<999>1 2003-10-11T22:14:15.003Z h a p m - x
<34>1 2003-10-11T22:14:15.003Z h a p m [broken
<34>Bad 11 22:14:15 host tag: 81.2.3.44
`
