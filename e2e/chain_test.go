package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ssanet/ssanet/agent/sink/testpki"
)

// syslogOffer is agent B's offer: the syslog lines its listener takes, shared unmasked
// (they were refined once already, by the SSA under which agent A received them).
const syslogOffer = `id: relayed-syslog
approval: auto
proposal-validity: 1h
terms:
  participants:
    provider:
      affiliation: Example Relay Ltd
      name: Log relay
  information:
    - name: Relayed alerts
      type: attack-detection-log
      format: syslog
  policy:
    handling:
      tlp: AMBER
      retention: 180d
      redistribution: organisation
  method:
    protocols: [/ssanet/exchange/1.0.0]
    security: [noise, tls]
`

// syslogTemplate is agent C's request for B's syslog lines.
const syslogTemplate = `participants:
  requester:
    affiliation: Example National CERT
    name: SOC duty desk
information:
  - name: Relayed alerts
    type: attack-detection-log
    format: syslog
policy:
  handling:
    tlp: GREEN
    retention: 90d
    redistribution: organisation
method:
  protocols: [/ssanet/exchange/1.0.0]
  security: [noise, tls]
schedule:
  start: 2010-01-01T00:00:00Z
  end: now+365d
`

// TestChainedAgents: agent A, a requester, forwards what it receives from provider P through
// its syslog sink (RFC 5424, octet counted) to agent B's syslog listener; B shares what its
// listener takes, under an SSA for format syslog, with agent C, whose JSON Lines sink
// receives it. Every record A received arrives at B exactly once (B's ingest counter) and at
// C exactly once, with the content A forwarded: C's record is A's syslog message, whose MSG is
// the record as A's own JSON Lines sink wrote it (ssa_id, seq, record). Over TCP and over TLS
// with client certificates (RFC 5425).
func TestChainedAgents(t *testing.T) {
	for _, network := range []string{"tcp", "tls"} {
		t.Run(network, func(t *testing.T) { testChain(t, network) })
	}
}

func testChain(t *testing.T, network string) {
	const n = 400
	dir := t.TempDir()
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	metrics := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ingest := "syslog-tcp: " + listen
	sinkTLS := ""
	if network == "tls" {
		pki := writePKI(t, dir)
		ingest = fmt.Sprintf("syslog-tls: {address: %q, cert: %q, key: %q, client-ca: %q}", listen, pki.serverCert, pki.serverKey, pki.ca)
		sinkTLS = fmt.Sprintf(", tls-ca: %q, tls-cert: %q, tls-key: %q", pki.ca, pki.clientCert, pki.clientKey)
	}

	// B and C first: the SSA for B's syslog must be in force before A forwards anything, or
	// B's listener takes records that no SSA shares.
	b := newAgent(t, "relay", "", withYAML(fmt.Sprintf("metrics: %s\ningest:\n  %s", metrics, ingest)))
	offer := filepath.Join(dir, "relay-offer.yaml")
	tmpl := filepath.Join(dir, "relay-request.yaml")
	if err := os.WriteFile(offer, []byte(syslogOffer), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tmpl, []byte(syslogTemplate), 0o600); err != nil {
		t.Fatal(err)
	}
	b.must("offer", "add", offer)
	cSink := filepath.Join(dir, "c-siem.jsonl")
	c := newAgent(t, "siem", "", withJSONLSink(cSink))
	idBC := agree(t, c, b, tmpl)
	b.waitState(idBC, "approved", settle)

	aSink := filepath.Join(dir, "a-siem.jsonl")
	p := newAgent(t, "provider", "")
	a := newAgent(t, "requester", "", withYAML(fmt.Sprintf(`sinks:
  - {type: jsonl, path: %q}
  - {name: relay, type: syslog, network: %s, address: %q, sd-id: ssanet@32473%s}`, aSink, network, listen, sinkTLS)))
	p.offer("provider.yaml")
	idPA := agree(t, a, p, requesterTemplate(t, "", "90d"))
	p.waitState(idPA, "approved", settle)

	if ing := p.ingest(eveStream(sampleEVE(t), streamBase, 0, n, nil)); ing.Queued[idPA] != n {
		t.Fatalf("ingest at P: %+v, want %d queued for %s", ing, n, idPA)
	}
	// What A forwarded, by seq: its own JSON Lines sink has the same records.
	fromA := map[uint64]recordView{}
	for _, r := range waitSink(t, aSink, idPA, n, deliverBy) {
		fromA[r.Seq] = r
	}

	// C receives B's records of its SSA with B, 1..n, each once and in order.
	readC := func() []recordView {
		got, bad := readSink(t, cSink)
		if bad > 0 {
			t.Errorf("C's sink holds %d lines that are not records", bad)
		}
		return got
	}
	var got []recordView
	for deadline := time.Now().Add(deliverBy); len(got) < n; {
		if time.Now().After(deadline) {
			t.Fatalf("C's sink holds %d of %d records after %s", len(got), n, deliverBy)
		}
		time.Sleep(pollInterval)
		got = readC()
	}
	ingested, err := waitMetric(metrics, "ssanet_records_ingested_total", n, 10*time.Second)
	if err != nil || ingested != n {
		t.Errorf("B ingested %v records (%v), want exactly %d", ingested, err, n)
	}
	// A repeat would reach C after the first n: read again until C's sink stays the same
	// for a few polls, so that it is counted below.
	for stable, deadline := 0, time.Now().Add(10*time.Second); stable < 5 && time.Now().Before(deadline); {
		time.Sleep(pollInterval)
		if again := readC(); len(again) != len(got) {
			got, stable = again, 0
		} else {
			stable++
		}
	}
	checkDense(t, "C's sink", idBC, got, n)

	// Each of C's records is one of A's, by content; each of A's arrives once.
	seen := map[uint64]int{}
	for i, r := range got {
		m := syslogMessage.FindStringSubmatch(r.Text)
		var inner recordView
		if m == nil || json.Unmarshal([]byte(m[3]), &inner) != nil {
			t.Errorf("C's record %d is not a syslog message of A's sink: %.300q", i+1, r.Text)
			continue
		}
		want, ok := fromA[inner.Seq]
		if sdSeq, _ := strconv.ParseUint(m[2], 10, 64); !ok || inner.SSAID != idPA || m[1] != idPA || sdSeq != inner.Seq {
			t.Errorf("C's record %d carries %s #%d (structured data %s #%s), not one of A's records %s 1..%d", i+1, inner.SSAID, inner.Seq, m[1], m[2], idPA, n)
			continue
		}
		if !bytes.Equal(compactJSON(t, inner.Record), compactJSON(t, want.Record)) {
			t.Errorf("C's record %d (A's #%d) differs from what A's JSON Lines sink holds:\n%s\n%s", i+1, inner.Seq, inner.Record, want.Record)
		}
		seen[inner.Seq]++
	}
	var missing, repeated []uint64
	for s := uint64(1); s <= n; s++ {
		switch {
		case seen[s] == 0:
			missing = append(missing, s)
		case seen[s] > 1:
			repeated = append(repeated, s)
		}
	}
	if len(missing)+len(repeated) > 0 {
		t.Errorf("of A's %d records, %d never arrived at C (the first: %v) and %d arrived more than once (the first: %v)",
			n, len(missing), missing[:min(len(missing), 5)], len(repeated), repeated[:min(len(repeated), 5)])
	}
	t.Logf("%s: %d records P -> A -> (syslog %s) -> B -> C, each once", network, n, network)
}

// compactJSON is data without insignificant space, for comparing two renderings of a record.
func compactJSON(t *testing.T, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, data); err != nil {
		t.Errorf("not JSON: %v: %.200q", err, data)
	}
	return b.Bytes()
}

// waitMetric polls a counter of the agent's metrics (a loopback address) until it reaches
// want or timeout passes, and returns its last value.
func waitMetric(addr, name string, want float64, timeout time.Duration) (float64, error) {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		v, err := metricValue(client, addr, name)
		if (err == nil && v >= want) || time.Now().After(deadline) {
			return v, err
		}
		time.Sleep(pollInterval)
	}
}

// metricValue reads a metric from the agent's metrics: the sum over its labels, if it has any.
func metricValue(client *http.Client, addr, name string) (float64, error) {
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	var sum float64
	found := false
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %w", line, err)
		}
		sum, found = sum+v, true
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("no %s in the metrics of %s", name, addr)
	}
	return sum, nil
}

// pki holds the PEM files of a test CA, a server certificate for 127.0.0.1 and a client
// certificate.
type pki struct{ ca, serverCert, serverKey, clientCert, clientKey string }

func writePKI(t *testing.T, dir string) pki {
	t.Helper()
	p := testpki.New(t, dir)
	out := pki{ca: p.CA}
	_, out.serverCert, out.serverKey = p.Leaf("server")
	_, out.clientCert, out.clientKey = p.Leaf("client")
	return out
}
