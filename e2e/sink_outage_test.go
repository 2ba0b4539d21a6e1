package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// sinkView is a sink's state in `ssanet sinks --json`.
type sinkView struct {
	Name string `json:"name"`
	SSAs map[string]struct {
		Position uint64 `json:"position"`
		Lag      uint64 `json:"lag"`
	} `json:"ssas"`
	Errors       uint64    `json:"errors"`
	LastError    string    `json:"last_error"`
	LastSuccess  time.Time `json:"last_success"`
	FailingSince time.Time `json:"failing_since"`
}

// TestSinkOutageDegrades: records arrive while the requester's syslog receiver is down (its
// port refuses): `ssanet monitor` says DEGRADED, names the sink and exits 5, `ssanet sinks`
// shows the lag and the errors, and the log says once that the sink fails (not once per
// retry). Once the receiver is up the sink catches up, the verdict is fulfilled and monitor
// exits 0.
func TestSinkOutageDegrades(t *testing.T) {
	const n = 100
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t)) // nothing listens there yet: refused
	prov := newAgent(t, "provider", "")
	req := newAgent(t, "requester", "", withYAML(fmt.Sprintf(`sinks:
  - {name: siem, type: syslog, network: tcp, address: %q, sd-id: ssanet@32473}`, addr)))
	prov.offer("provider.yaml")
	id := agree(t, req, prov, requesterTemplate(t, "", "90d"))
	if ing := prov.ingest(eveStream(sampleEVE(t), streamBase, 0, n, nil)); ing.Queued[id] != n {
		t.Fatalf("ingest: %+v, want %d queued for %s", ing, n, id)
	}
	waitInbox(t, req, id, n, deliverBy)

	// Down: degraded, the sink named, exit 5; its state shows the lag; three retries or more
	// and still one warning.
	deadline := time.Now().Add(deliverBy)
	for {
		var sinks []sinkView
		req.query(&sinks, "sinks")
		as := req.monitor(id)
		if len(sinks) == 1 && sinks[0].Errors >= 3 && as.Verdict == "degraded" {
			s := sinks[0]
			if s.Name != "siem" || s.SSAs[id].Lag != n || s.SSAs[id].Position != 0 || s.FailingSince.IsZero() ||
				s.LastError == "" || !s.LastSuccess.IsZero() {
				t.Fatalf("sinks while the receiver is down: %+v, want siem failing with lag %d", s, n)
			}
			if !strings.Contains(strings.Join(as.Reasons, "; "), "sink siem is failing") {
				t.Fatalf("monitor --json: reasons %v do not name the failing sink", as.Reasons)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s of a refusing receiver: sinks %+v, verdict %s (%v); want siem failing and degraded", deliverBy, sinks, as.Verdict, as.Reasons)
		}
		time.Sleep(pollInterval * 2)
	}
	text, code := req.monitorText(id)
	if code != 5 || !strings.Contains(text, "DEGRADED") || !strings.Contains(text, "sink siem is failing") ||
		!strings.Contains(text, "sink siem (syslog): FAILING") {
		t.Fatalf("monitor with the receiver down exits %d and prints:\n%s\nwant exit 5, DEGRADED, the sink named", code, text)
	}
	if warned := req.logLines("sink failing"); warned != 1 {
		t.Errorf("the log says %d times that the sink fails, want once (then at most once a minute)", warned)
	}

	// Up: the sink catches up, fulfilled, exit 0.
	got := newReceiver("syslog TCP")
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the receiver's port was taken meanwhile: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go readOctetCounted(c, func(msg string) { got.addSyslog(id, msg) }, func(err error) {
				got.mu.Lock()
				got.bad = append(got.bad, "TCP framing: "+err.Error())
				got.mu.Unlock()
			})
		}
	}()
	deadline = time.Now().Add(deliverBy)
	for {
		as := req.monitor(id)
		if distinct, _ := got.count(); distinct == n && as.Verdict == "fulfilled" {
			break
		}
		if time.Now().After(deadline) {
			distinct, _ := got.count()
			t.Fatalf("%s after the receiver came back: %d of %d records received, verdict %s (%v)", deliverBy, distinct, n, as.Verdict, as.Reasons)
		}
		time.Sleep(pollInterval * 2)
	}
	if text, code := req.monitorText(id); code != 0 || !strings.Contains(text, "FULFILLED") || !strings.Contains(text, "sink siem (syslog): ok") {
		t.Errorf("monitor after the receiver came back exits %d and prints:\n%s", code, text)
	}
	got.mu.Lock()
	bad := got.bad
	got.mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("the receiver got %d bad messages, the first: %s", len(bad), bad[0])
	}
	if req.logLines("sink recovered") != 1 {
		t.Errorf("the log does not say once that the sink recovered")
	}
}
