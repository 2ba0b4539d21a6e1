package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// deliverBy bounds the wait for a stream of records to reach the requester's sink (generous:
// the daemons may run with -race on a loaded machine).
const deliverBy = 2 * time.Minute

// attacker is the spec's example of an attacking system ("only data where the IP address of
// the attacking system is 1.1.1.1").
const attacker = "1.1.1.1"

// TestAppendixI runs Appendix I steps ①–⑭ with three daemons: a directory node that the
// provider (domain B) and the requester (domain A) bootstrap to. The requester finds the
// provider in the directory, negotiates an SSA with the spec's filter (attacker 1.1.1.1) and
// 8-bit masking of public addresses, and a limit on the records' own time (a filter on
// @timestamp: the schedule is when sharing happens, not which records); the provider's
// sensor hands it EVE records (some dated before that limit), syslog records (by the CLI and by its UDP listener) and IDMEFv2 records,
// which the SSA does not cover. The requester's management server (a JSON Lines sink)
// receives exactly the EVE records the filter keeps, each refined as agreed, and the
// monitor's verdict, from the provider's signed report and the requester's own figures, is
// fulfilled.
func TestAppendixI(t *testing.T) {
	const n = 2000         // EVE records inside the schedule
	const outside = 20     // EVE records dated before 2010, which the filter excludes
	const syslogLines = 50 // per syslog source
	directory := newAgent(t, "directory", "")
	boot := withYAML(fmt.Sprintf("bootstrap: [%q]", directory.addr()))
	syslogPort := freeUDPPort(t)
	prov := newAgent(t, "provider", "", boot, withYAML(fmt.Sprintf("ingest:\n  syslog-udp: 127.0.0.1:%d", syslogPort)))
	sink := filepath.Join(t.TempDir(), "management-server.jsonl")
	req := newAgent(t, "requester", "", boot, withJSONLSink(sink))
	prov.offer("provider.yaml")
	provID := prov.peerID()

	// ① The requester looks the provider up in the directory.
	type found struct {
		PeerID string   `json:"peer_id"`
		Addrs  []string `json:"addrs"`
		Offers []struct {
			ID string `json:"id"`
		} `json:"offers"`
	}
	start := time.Now()
	var hit *found
	for hit == nil {
		r := req.cli("--json", "discover", "--type", "attack-detection-log", "--format", "eve", "--timeout", "2s")
		var ps []found
		if r.code == 0 && decode(r.stdout, &ps) == nil {
			for i := range ps {
				if ps[i].PeerID == provID {
					hit = &ps[i]
				}
			}
		}
		if hit == nil && time.Since(start) > 30*time.Second {
			t.Fatalf("the directory does not list the provider %s after 30s: %s", provID, r)
		}
	}
	if len(hit.Offers) != 1 || hit.Offers[0].ID != "ids-alerts" {
		t.Errorf("discovered offers %+v, want ids-alerts", hit.Offers)
	}
	discovered := time.Since(start)

	// ②–⑥ Negotiation by peer ID alone: the addresses come from the directory.
	tmpl := requesterTemplate(t, fmt.Sprintf(`r["source.ip"] == %q && r["@timestamp"] >= timestamp("2010-01-01T00:00:00Z")`, attacker), "90d")
	r := req.cli("--json", "request", "--provider", provID, "--template", tmpl, "--wait", "20s")
	var v struct {
		negView
		SSA *struct {
			ssaView
			Policy struct {
				Filtering []struct {
					Expr string `json:"expr"`
				} `json:"filtering"`
				Handling struct {
					TLP string `json:"tlp"`
				} `json:"handling"`
			} `json:"policy"`
		} `json:"ssa"`
	}
	if r.code != 0 || decode(r.stdout, &v) != nil || v.State != "approved" || v.SSA == nil {
		checkReasonsDecoded(t, r)
		t.Fatalf("request to the discovered provider: want approved: %s", r)
	}
	id := v.SSAID
	if len(v.SSA.Policy.Filtering) != 1 || !strings.Contains(v.SSA.Policy.Filtering[0].Expr, attacker) || v.SSA.Policy.Handling.TLP != "AMBER" {
		t.Errorf("agreed policy %+v: want the requester's filter and the provider's TLP AMBER", v.SSA.Policy)
	}
	prov.waitState(id, "approved", settle)

	// ⑦–⑧ The sensor's records. One in four attacks comes from elsewhere than 1.1.1.1.
	sample := sampleEVE(t)
	src := func(i int) string {
		if i%4 == 0 {
			return fmt.Sprintf("93.184.%d.%d", (i/250)%256, i%250+1)
		}
		return attacker
	}
	recs := eveStream(sample, streamBase, 0, n, src)
	recs = append(recs, eveStream(sample, time.Date(2009, 12, 31, 0, 0, 0, 0, time.UTC), n, outside, src)...)
	keep := map[string]eveRecord{} // by timestamp: what the SSA lets through
	for _, rec := range recs[:n] {
		if rec.src == attacker {
			keep[rec.ts] = rec
		}
	}
	ing := prov.ingest(recs)
	queued := int(ing.Queued[id])
	if ing.Records != n+outside || ing.Malformed != 0 || len(ing.Queued) != 1 || queued != len(keep) {
		t.Fatalf("ingest of %d EVE records: %+v; want %d queued for %s (the attacks from %s dated from 2010 on)",
			n+outside, ing, len(keep), id, attacker)
	}

	// Records of formats the SSA does not cover: syslog by the CLI and by UDP, IDMEFv2.
	var syslog strings.Builder
	for i := range syslogLines {
		fmt.Fprintf(&syslog, "<38>1 %s sensor sshd %d - - Failed password for root from %s port %d\n",
			time.Now().UTC().Format(time.RFC3339), 1000+i, attacker, 40000+i)
	}
	syslogFile := filepath.Join(t.TempDir(), "auth.log")
	if err := os.WriteFile(syslogFile, []byte(syslog.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := prov.ingestFile("syslog", syslogFile); got.Records != syslogLines || len(got.Queued) != 0 {
		t.Errorf("ingest of syslog records, which no SSA covers: %+v, want %d records and nothing queued", got, syslogLines)
	}
	if got := prov.ingestFile("idmefv2", filepath.Join("..", "policy", "testdata", "idmefv2", "suricata-idmefv2.json")); got.Records != 1 || len(got.Queued) != 0 {
		t.Errorf("ingest of an IDMEFv2 record (offered, but not agreed): %+v, want 1 record and nothing queued", got)
	}
	conn, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", syslogPort))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(syslog.String()) {
		if _, err := conn.Write([]byte(strings.TrimSpace(line))); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close()

	// ⑨–⑪ Delivery to the management server.
	ingested := time.Now()
	waitSink(t, sink, id, queued, deliverBy)
	delivered := time.Since(ingested)
	// Give the syslog listener's records time to go wherever they would go (it flushes
	// every 50 ms): nowhere.
	time.Sleep(1500 * time.Millisecond)
	sunk, bad := readSink(t, sink)
	if bad > 0 {
		t.Errorf("the sink holds %d lines that are not records", bad)
	}
	checkDense(t, "sink", id, sunk, queued)
	held := req.records(id)
	checkDense(t, "requester's store", id, held, queued)

	// Every delivered record is one the SSA lets through, refined as agreed.
	seen := map[string]bool{}
	refineErrs := 0
	for _, rec := range held {
		ts := rec.ts()
		raw, ok := keep[ts]
		switch {
		case !ok:
			t.Errorf("record #%d (timestamp %q) is not one the SSA lets through: %s", rec.Seq, ts, rec.body())
			continue
		case seen[ts]:
			t.Errorf("record #%d (timestamp %q) was delivered twice", rec.Seq, ts)
		}
		seen[ts] = true
		if rec.Format != "eve" || rec.TLP != "AMBER" {
			t.Errorf("record #%d: format %q, TLP %q; want eve, AMBER", rec.Seq, rec.Format, rec.TLP)
		}
		if errs := refinementErrors(raw.line, rec.body()); len(errs) > 0 {
			if refineErrs++; refineErrs <= 5 {
				t.Errorf("record #%d is not refined as agreed: %s", rec.Seq, strings.Join(errs, "; "))
			}
		}
		if s, d := addresses(rec.body()); s != "1.1.1.0" || (d != "" && !strings.HasSuffix(d, ".0")) {
			t.Errorf("record #%d: src_ip %q, dest_ip %q; want 1.1.1.0 and a /24", rec.Seq, s, d)
		}
	}
	for i := range min(len(sunk), len(held)) {
		if !slices.Equal(sunk[i].body(), held[i].body()) {
			t.Errorf("sink record #%d differs from the stored one", sunk[i].Seq)
			break
		}
	}

	// ⑫–⑭ Monitoring: the provider's signed report and the requester's figures agree.
	as := req.monitor(id)
	p := as.Provider
	if as.Verdict != "fulfilled" || as.Phase != "execution" || p == nil || p.Error != "" {
		t.Fatalf("monitor: verdict %q phase %q, reasons %v, report %+v; want fulfilled in execution", as.Verdict, as.Phase, as.Reasons, p)
	}
	if p.Ingested != n+outside || p.Refined != uint64(queued) || p.Dropped != uint64(n+outside-queued) ||
		p.Sent != uint64(queued) || p.Acked != uint64(queued) || p.SentOutside != 0 || !p.InSchedule {
		t.Errorf("provider's report %+v: want ingested %d, refined, sent and acked %d, dropped %d", *p, n+outside, queued, n+outside-queued)
	}
	if l := as.Local; l.Last != uint64(queued) || l.Stored != uint64(queued) || l.Deleted != 0 || l.Violations != 0 || len(as.Evidence) != 0 {
		t.Errorf("requester's figures %+v, evidence %d: want %d received and held, no violations", l, len(as.Evidence), queued)
	}
	if text, code := req.monitorText(id); code != 0 || !strings.Contains(text, "FULFILLED") {
		t.Errorf("monitor exits %d and prints:\n%s", code, text)
	}
	t.Logf("Appendix I: discovery %s; %d EVE records ingested (%d dated before 2010), %d syslog by CLI and %d by UDP, "+
		"1 IDMEFv2; %d queued and delivered to the sink in %s; report: ingested %d refined %d dropped %d acked %d, "+
		"latency p50/p95/p99 %d/%d/%d ms; verdict %s",
		discovered.Round(time.Millisecond), n+outside, outside, syslogLines, syslogLines, queued, delivered.Round(time.Millisecond),
		p.Ingested, p.Refined, p.Dropped, p.Acked, p.LatencyP50, p.LatencyP95, p.LatencyP99, as.Verdict)
}

// TestBrokenProviderCaught: after a real negotiation, a provider that skips its enforcement
// point (this test process, with the provider's identity key, its daemon stopped) delivers raw
// records in signed batches; the requester stores them (as received, with the evidence),
// quarantines those that break the SSA (its sink receives only the others), and its monitor
// says the SSA is violated and lists the offending signed batches.
func TestBrokenProviderCaught(t *testing.T) {
	const n = 500
	prov := newAgent(t, "provider", "")
	sink := filepath.Join(t.TempDir(), "management-server.jsonl")
	req := newAgent(t, "requester", "", withJSONLSink(sink))
	prov.offer("provider.yaml")
	id := agree(t, req, prov, requesterTemplate(t, "", "90d"))
	agreed := req.must("ssa", "export", id)
	recs := eveStream(sampleEVE(t), streamBase, 0, n, nil)
	impersonate(t, prov, req).deliverRaw(id, []byte(agreed), recs)
	waitInbox(t, req, id, n, deliverBy)

	// The records arrive unmasked, and every one of those is quarantined.
	held := req.records(id)
	checkDense(t, "requester's store", id, held, n)
	unmasked, clean := 0, 0
	for _, r := range held {
		if s, _ := addresses(r.body()); s != "" && !strings.HasSuffix(s, ".0") {
			unmasked++
			if !r.Quarantined {
				t.Errorf("record %d, with src_ip %s unmasked, is not quarantined", r.Seq, s)
			}
		}
		if !r.Quarantined {
			clean++
		}
	}
	if unmasked == 0 {
		t.Fatalf("the cheating provider delivered refined records: nothing to catch")
	}
	// The sink gets the records that comply, and nothing else.
	waitSinkLines(t, sink, clean, deliverBy)
	time.Sleep(300 * time.Millisecond) // room for a record that should not come
	forwarded, bad := readSink(t, sink)
	if bad > 0 || len(forwarded) != clean {
		t.Fatalf("the sink holds %d records (%d bad lines), want the %d that comply", len(forwarded), bad, clean)
	}
	for _, r := range forwarded {
		if s, _ := addresses(r.body()); s != "" && !strings.HasSuffix(s, ".0") {
			t.Fatalf("record %d with src_ip %s unmasked was forwarded", r.Seq, s)
		}
	}

	as := req.monitor(id)
	if as.Verdict != "violated" {
		t.Fatalf("monitor after a provider delivered %d raw records: verdict %q (reasons %v), want violated", n, as.Verdict, as.Reasons)
	}
	if as.Local.Violations == 0 || len(as.Evidence) == 0 {
		t.Fatalf("monitor: violations %d, evidence %d batches; want both", as.Local.Violations, len(as.Evidence))
	}
	firsts := map[uint64]bool{}
	for _, e := range as.Evidence {
		if e.BatchBytes == 0 || len(e.Findings) == 0 || e.First < 1 || e.First > n || firsts[e.First] {
			t.Errorf("evidence %+v: want a distinct signed batch of this SSA with findings", e)
		}
		firsts[e.First] = true
		var fs []struct {
			Seq      uint64          `json:"seq"`
			Findings json.RawMessage `json:"findings"`
		}
		if err := json.Unmarshal(e.Findings, &fs); err != nil || len(fs) == 0 {
			t.Errorf("evidence from record %d: findings %s (%v), want one per offending record", e.First, e.Findings, err)
		}
	}
	if !firsts[1] {
		t.Errorf("no evidence starts at record 1: %v", firsts)
	}
	text, code := req.monitorText(id)
	if code != verdictCodes["violated"] || !strings.Contains(text, "VIOLATED") || !strings.Contains(text, "evidence: signed batch from record 1") {
		t.Errorf("monitor exits %d and prints:\n%s", code, text)
	}
	findings := ""
	if len(as.Evidence) > 0 {
		findings = string(as.Evidence[0].Findings)
		if len(findings) > 300 {
			findings = findings[:300] + "…"
		}
	}
	t.Logf("broken provider: %d raw records delivered (%d with unmasked src_ip, %d forwarded); verdict %s, %d records with violations, "+
		"%d evidence batches; reasons %v; first findings: %s",
		n, unmasked, clean, as.Verdict, as.Local.Violations, len(as.Evidence), as.Reasons, findings)
}
