package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/p2p/security/noise"

	"github.com/ssanet/ssanet/protocol"
)

// withMethod writes a copy of the template or offer at path with its method's security (and
// protocols, when given) replaced.
func withMethod(t *testing.T, path string, protocols, security string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for old, repl := range map[string]string{"protocols: [/ssanet/exchange/1.0.0]": protocols, "security: [noise, tls]": security} {
		if repl == "" {
			continue
		}
		if !strings.Contains(text, old) {
			t.Fatalf("%s has no %q to replace", path, old)
		}
		text = strings.Replace(text, old, repl, 1)
	}
	out := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(out, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMethodEnforced: the agreed method holds at both ends (issue 14 item 4).
//   - A request whose method says ftp over ipsec is refused by the provider during
//     negotiation (method-unsupported, per component; exit 3).
//   - An SSA that lists tls only, between agents that both have noise and tls: the
//     requester dialled (noise first), so the connection is noise. The provider delivers
//     nothing over it and says why (its log, its report: the requester's monitor shows the
//     SSA degraded); a provider that delivers over it anyway (this process, with the
//     provider's key, noise only) has its batch refused, and the requester's monitor says
//     the SSA is violated.
//   - The same SSA with a requester configured with tls only: records flow.
func TestMethodEnforced(t *testing.T) {
	prov := newAgent(t, "provider", "", fastExchange...)
	req := newAgent(t, "requester", "", fastExchange...)

	// Negotiation: a method the provider cannot honour.
	prov.must("offer", "add", withMethod(t, testdata(t, "provider.yaml"), "protocols: [ftp, /ssanet/exchange/1.0.0]", "security: [ipsec, noise, tls]"))
	v, r := req.request(prov, withMethod(t, requesterTemplate(t, "", "90d"), "protocols: [ftp]", "security: [ipsec]"), 20*time.Second)
	checkReasonsDecoded(t, r)
	if r.code != 3 || v.State != "rejected" || len(v.Reasons) != 2 ||
		v.Reasons[0].Code != "method-unsupported" || v.Reasons[0].Component != "method.protocols" ||
		v.Reasons[1].Code != "method-unsupported" || v.Reasons[1].Component != "method.security" ||
		!strings.Contains(v.Reasons[0].Text, "/ssanet/exchange/1.0.0") {
		t.Fatalf("request of ftp over ipsec: exit %d, %+v; want exit 3, rejected: method-unsupported for method.protocols and method.security\n%s", r.code, v, r)
	}
	if pv := prov.show(v.SSAID); pv.State != "rejected" {
		t.Fatalf("the provider holds the request %s", pv.State)
	}

	// Delivery over a connection the SSA does not list.
	id := agree(t, req, prov, withMethod(t, requesterTemplate(t, "", "90d"), "", "security: [tls]"))
	if s := req.show(id).SSA; s == nil {
		t.Fatal("no SSA shown")
	}
	recs := eveStream(sampleEVE(t), streamBase, 0, 50, nil)
	if in := prov.ingest(recs); in.Queued[id] == 0 {
		t.Fatalf("ingest queued nothing for %s: %+v", id, in)
	}
	deadline := time.Now().Add(deliverBy)
	var as assessmentView
	for {
		as = req.monitor(id)
		if as.Verdict == "degraded" && hasReason(as.Reasons, "the provider holds delivery: delivery over a connection secured by noise (tcp), which the SSA's method.security (tls) does not list") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("monitor: %s %v; want degraded, the provider holding delivery", as.Verdict, as.Reasons)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if as.Local.Last != 0 || as.Provider == nil || as.Provider.Acked != 0 {
		t.Fatalf("records were delivered: %+v, report %+v", as.Local, as.Provider)
	}
	if prov.logLines("delivery held: the SSA's method does not allow it") == 0 {
		t.Fatal("the provider did not log why it holds delivery")
	}

	agreed := req.must("ssa", "export", id)
	c := impersonate(t, prov, req, libp2p.Security(noise.ID, noise.New))
	refusal := c.sendOne(id, []byte(agreed), recs[:10])
	if !strings.Contains(refusal, "does not allow this batch: delivery over a connection secured by noise") {
		t.Fatalf("the batch over noise was answered %q; want refused for its method", refusal)
	}
	as = req.monitor(id)
	if as.Verdict != "violated" || as.Local.Last != 0 || len(as.Evidence) != 1 ||
		!hasReason(as.Reasons, "1 batches came over a protocol or connection security the SSA's method does not list") ||
		evidenceCode(t, as.Evidence[0].Findings) != "method" {
		t.Fatalf("monitor after a batch over noise: %s %v, %+v, %d batches of evidence; want violated, nothing stored, the batch kept", as.Verdict, as.Reasons, as.Local, len(as.Evidence))
	}
	if req.logLines("SSA violated: batch delivered over a method the SSA does not list refused") == 0 {
		t.Fatal("the requester did not log the violation")
	}

	// An agent configured with the agreed security only: the SSA is honoured.
	if err := c.host.Close(); err != nil {
		t.Fatal(err)
	}
	prov.start()
	tlsReq := newAgent(t, "tls-requester", "", append(fastExchange, withYAML("security: [tls]"))...)
	id2 := agree(t, tlsReq, prov, withMethod(t, requesterTemplate(t, "", "90d"), "", "security: [tls]"))
	queued := prov.ingest(recs).Queued[id2]
	if queued == 0 {
		t.Fatalf("nothing queued for %s", id2)
	}
	if as := waitInbox(t, tlsReq, id2, int(queued), deliverBy); as.Verdict != "fulfilled" {
		t.Fatalf("monitor over tls: %s %v", as.Verdict, as.Reasons)
	}
}

// evidenceCode is the code of the first finding of a batch kept as evidence.
func evidenceCode(t *testing.T, findings json.RawMessage) string {
	t.Helper()
	var fs []struct{ Findings []struct{ Code string } }
	if err := json.Unmarshal(findings, &fs); err != nil || len(fs) == 0 || len(fs[0].Findings) == 0 {
		t.Fatalf("findings %s: %v", findings, err)
	}
	return fs[0].Findings[0].Code
}

func hasReason(reasons []string, part string) bool {
	for _, r := range reasons {
		if strings.Contains(r, part) {
			return true
		}
	}
	return false
}

// sendOne sends recs, unrefined, as one batch of the SSA ssaID (exported by the requester)
// labelled with the agreed SSP, and returns the error the requester's acknowledgement carries.
func (c *cheater) sendOne(ssaID string, agreed []byte, recs []eveRecord) string {
	c.t.Helper()
	ssp, st := c.openExchange(agreed)
	defer st.Close()
	mark := ssp.Marking()
	b := &protocol.Batch{SSAID: ssaID, SSPHash: ssp.Hash(), First: 1, Format: protocol.FormatEVE,
		TLP: mark.TLP, Marking: mark.MarkingRef, Sent: time.Now().UnixMilli()}
	for _, r := range recs {
		b.Records = append(b.Records, r.line)
	}
	raw, err := protocol.SealBatch(c.self, b)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := writeFrame(st, raw); err != nil {
		c.t.Fatalf("send the batch: %v", err)
	}
	body, err := readFrame(bufio.NewReader(st))
	if err != nil {
		c.t.Fatalf("acknowledgement: %v", err)
	}
	ack, err := protocol.DecodeBatchAck(body)
	if err != nil {
		c.t.Fatal(err)
	}
	return ack.Error
}
