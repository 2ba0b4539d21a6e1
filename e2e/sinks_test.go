package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// syslogMessage is the RFC 5424 message a syslog sink sends per record (octet-counted over
// TCP): the record as JSON after the structured data naming the SSA and the sequence number
// (the sinks below set sd-id ssanet@32473, RFC 5612's documentation number).
var syslogMessage = regexp.MustCompile(`^<\d+>1 \S+ \S+ ssanet - record \[ssanet@32473 ssa="([^"]+)" seq="(\d+)" format="[^"]+"\] (\{.*\})$`)

// receiver collects what a sink receives, by sequence number.
type receiver struct {
	name string
	mu   sync.Mutex
	seqs map[uint64]int
	bad  []string // messages that are not a record of the SSA, refined
}

func newReceiver(name string) *receiver { return &receiver{name: name, seqs: map[uint64]int{}} }

// add takes one forwarded record (from a syslog message, with the SSA and seq of its
// structured data, or from a webhook body).
func (rc *receiver) add(id string, r recordView, sdSSA string, sdSeq uint64) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	src, _ := addresses(r.body())
	if r.SSAID != id || sdSSA != id || r.Seq != sdSeq || r.Seq == 0 || (src != "" && !strings.HasSuffix(src, ".0")) {
		rc.bad = append(rc.bad, fmt.Sprintf("record %s #%d (structured data %s #%d), src_ip %q", r.SSAID, r.Seq, sdSSA, sdSeq, src))
		return
	}
	rc.seqs[r.Seq]++
}

func (rc *receiver) addSyslog(id, msg string) {
	m := syslogMessage.FindStringSubmatch(msg)
	var r recordView
	if m == nil || json.Unmarshal([]byte(m[3]), &r) != nil {
		rc.mu.Lock()
		rc.bad = append(rc.bad, "not a syslog record message: "+msg)
		rc.mu.Unlock()
		return
	}
	seq, _ := strconv.ParseUint(m[2], 10, 64)
	rc.add(id, r, m[1], seq)
}

// count returns how many distinct records arrived and how many arrived more than once.
func (rc *receiver) count() (distinct, dups int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, n := range rc.seqs {
		distinct++
		dups += n - 1
	}
	return distinct, dups
}

// TestSinks: the requester forwards every stored record to a syslog receiver over UDP and
// one over TCP (RFC 5424, octet counting), to a webhook that fails its first two POSTs (the
// sink retries) and to a JSON Lines file; a sink declared as public (relation any) gets
// nothing, since the SSA allows redistribution within the organisation only.
func TestSinks(t *testing.T) {
	const n = 500
	var id string // set once agreed, before any record can be forwarded
	var idMu sync.Mutex
	ssaID := func() string { idMu.Lock(); defer idMu.Unlock(); return id }

	udp := newReceiver("syslog UDP")
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	udpRecv := pc.(*net.UDPConn)
	// Room for the whole stream (about 2 KiB of kernel memory per datagram), so that a
	// receiver the scheduler starves for a moment loses nothing; capped by rmem_max.
	udpRecv.SetReadBuffer(8 << 20)
	t.Cleanup(func() { udpRecv.Close() })
	go func() {
		buf := make([]byte, 64<<10)
		for {
			k, _, err := udpRecv.ReadFrom(buf)
			if err != nil {
				return
			}
			udp.addSyslog(ssaID(), string(buf[:k]))
		}
	}()

	tcp := newReceiver("syslog TCP")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go readOctetCounted(c, func(msg string) { tcp.addSyslog(ssaID(), msg) }, func(err error) {
				tcp.mu.Lock()
				tcp.bad = append(tcp.bad, "TCP framing: "+err.Error())
				tcp.mu.Unlock()
			})
		}
	}()

	hook := newReceiver("webhook")
	var posts, refused int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		hook.mu.Lock()
		posts++
		fail := posts <= 2
		if fail {
			refused++
		}
		hook.mu.Unlock()
		if fail {
			http.Error(w, "not now", http.StatusServiceUnavailable)
			return
		}
		var recs []recordView
		if err != nil || r.Method != http.MethodPost || json.Unmarshal(body, &recs) != nil || len(recs) == 0 {
			hook.mu.Lock()
			hook.bad = append(hook.bad, fmt.Sprintf("%s with %d bytes: not a JSON array of records", r.Method, len(body)))
			hook.mu.Unlock()
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		for _, rec := range recs {
			hook.add(ssaID(), rec, rec.SSAID, rec.Seq)
		}
	}))
	t.Cleanup(srv.Close) // after the requester stops: cleanups run last-in first-out

	dir := t.TempDir()
	sink, public := filepath.Join(dir, "siem.jsonl"), filepath.Join(dir, "public-feed.jsonl")
	prov := newAgent(t, "provider", "")
	req := newAgent(t, "requester", "", withYAML(fmt.Sprintf(`sinks:
  - {type: jsonl, path: %q}
  - {name: siem-udp, type: syslog, network: udp, address: %q, sd-id: ssanet@32473}
  - {name: siem-tcp, type: syslog, network: tcp, address: %q, sd-id: ssanet@32473}
  - {name: soar, type: webhook, url: %q}
  - {name: public-feed, type: jsonl, path: %q, relation: any}`,
		sink, udpRecv.LocalAddr().String(), ln.Addr().String(), srv.URL+"/ssanet/records", public)))
	prov.offer("provider.yaml")
	idMu.Lock()
	id = agree(t, req, prov, requesterTemplate(t, "", "90d"))
	idMu.Unlock()

	if ing := prov.ingest(eveStream(sampleEVE(t), streamBase, 0, n, nil)); ing.Queued[id] != n {
		t.Fatalf("ingest: %+v, want %d queued for %s", ing, n, id)
	}
	recs := waitSink(t, sink, id, n, deliverBy)
	start := time.Now()
	if dups := sinkCoverage(t, "jsonl sink", id, recs, n); dups > 0 {
		t.Errorf("jsonl sink: %d duplicates without any restart", dups)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, rc := range []*receiver{udp, tcp, hook} {
		for {
			got, _ := rc.count()
			if got == n {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s received %d of %d records", rc.name, got, n)
				break
			}
			time.Sleep(pollInterval)
		}
	}
	forwarded := time.Since(start)
	for _, rc := range []*receiver{udp, tcp, hook} {
		got, dups := rc.count()
		rc.mu.Lock()
		if len(rc.bad) > 0 {
			t.Errorf("%s received %d bad messages, the first: %s", rc.name, len(rc.bad), rc.bad[0])
		}
		rc.mu.Unlock()
		if dups > 0 {
			t.Errorf("%s received %d records more than once", rc.name, dups)
		}
		t.Logf("%s: %d distinct records, %d duplicates", rc.name, got, dups)
	}
	hook.mu.Lock()
	if refused != 2 || posts < 3 {
		t.Errorf("webhook: %d POSTs, %d refused; want the first 2 refused and retried", posts, refused)
	}
	t.Logf("webhook: %d POSTs, the first %d answered 503; the other sinks complete %s after the jsonl sink",
		posts, refused, forwarded.Round(time.Millisecond))
	hook.mu.Unlock()
	if got, _ := readSink(t, public); len(got) > 0 {
		t.Errorf("a sink declared public (relation any) received %d records of an SSA that allows redistribution within the organisation only", len(got))
	}
}

// readOctetCounted reads RFC 6587 octet-counted syslog messages ("LEN MSG") from c.
func readOctetCounted(c net.Conn, msg func(string), fail func(error)) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		lenText, err := r.ReadString(' ')
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				fail(err)
			}
			return
		}
		size, err := strconv.Atoi(strings.TrimSpace(lenText))
		if err != nil || size <= 0 || size > 1<<20 {
			fail(fmt.Errorf("bad length %q", lenText))
			return
		}
		buf := make([]byte, size)
		if _, err := io.ReadFull(r, buf); err != nil {
			fail(err)
			return
		}
		msg(string(buf))
	}
}

// TestRetention: under an SSA whose handling says retention: 2s and a requester that checks
// every 500 ms, every received record is deleted once it is 2 s old, never before; the
// monitor counts them as deleted by retention.
func TestRetention(t *testing.T) {
	const n = 300
	const retention = 2 * time.Second
	const check = 500 * time.Millisecond
	prov := newAgent(t, "provider", "")
	sink := filepath.Join(t.TempDir(), "siem.jsonl")
	req := newAgent(t, "requester", "", withJSONLSink(sink), withConfig("retention-check", check.String()))
	prov.offer("provider.yaml")
	id := agree(t, req, prov, requesterTemplate(t, "", "2s"))
	var v struct {
		SSA struct {
			Policy struct {
				Handling struct {
					Retention string `json:"retention"`
				} `json:"handling"`
			} `json:"policy"`
		} `json:"ssa"`
	}
	req.query(&v, "ssa", "show", id)
	if got := v.SSA.Policy.Handling.Retention; got != "2s" {
		t.Fatalf("agreed retention %q, want the requester's 2s (the shorter)", got)
	}

	if ing := prov.ingest(eveStream(sampleEVE(t), streamBase, 0, n, nil)); ing.Queued[id] != n {
		t.Fatalf("ingest: %+v, want %d queued for %s", ing, n, id)
	}
	recs := waitSink(t, sink, id, n, deliverBy)
	received := map[uint64]time.Time{}
	var last time.Time
	for _, r := range recs {
		received[r.Seq] = r.Received
		if r.Received.After(last) {
			last = r.Received
		}
	}

	// Poll until the store is empty; a record missing from a listing must have been older
	// than the retention when the listing ended.
	deadline := time.Now().Add(retention + 15*time.Second)
	maxHeld, polls := 0, 0
	var emptyAt time.Time
	for {
		held := req.records(id)
		end := time.Now()
		polls++
		maxHeld = max(maxHeld, len(held))
		in := map[uint64]bool{}
		for _, r := range held {
			in[r.Seq] = true
		}
		for seq, at := range received {
			if !in[seq] && end.Sub(at) < retention {
				t.Fatalf("record #%d was deleted %s after it was received, before the retention of %s", seq, end.Sub(at), retention)
			}
		}
		if len(held) == 0 {
			emptyAt = end
			break
		}
		if end.After(deadline) {
			t.Fatalf("%d records still held %s after the last was received (retention %s, checked every %s)",
				len(held), end.Sub(last), retention, check)
		}
		time.Sleep(pollInterval)
	}
	if maxHeld == 0 {
		t.Errorf("the records were deleted before the test could see them held (received %s before the first listing)", time.Since(last))
	}
	late := emptyAt.Sub(last) - retention
	if late > check+3*time.Second {
		t.Errorf("the last record was deleted %s after its retention ran out (checked every %s)", late, check)
	}
	as := req.monitor(id)
	if as.Local.Last != n || as.Local.Stored != 0 || as.Local.Deleted != n {
		t.Errorf("monitor after retention: requester %+v, want %d received, 0 held, %d deleted", as.Local, n, n)
	}
	if text, _ := req.monitorText(id); !strings.Contains(text, fmt.Sprintf("deleted by retention %d", n)) {
		t.Errorf("monitor prints:\n%s", text)
	}
	t.Logf("retention %s, checked every %s: %d records held at most in %d listings; the store was empty %s after the last record was received (%s past its retention); monitor: %+v, verdict %s",
		retention, check, maxHeld, polls, emptyAt.Sub(last).Round(time.Millisecond), late.Round(time.Millisecond), as.Local, as.Verdict)

	// The handling terms bind what was received under an SSA after it is annulled too.
	t.Run("cancelled SSA", func(t *testing.T) {
		req, prov := req.in(t), prov.in(t)
		req.must("ssa", "cancel", id, "--wait", "20s")
		id := agree(t, req, prov, requesterTemplate(t, "", "2s"))
		const n = 100
		if ing := prov.ingest(eveStream(sampleEVE(t), streamBase.Add(time.Hour), 0, n, nil)); ing.Queued[id] != n {
			t.Fatalf("ingest: %+v, want %d queued for %s", ing, n, id)
		}
		waitSink(t, sink, id, n, deliverBy)
		req.must("ssa", "cancel", id, "--wait", "20s")
		cancelled := time.Now()
		deadline := cancelled.Add(retention + check + 3*time.Second)
		for len(req.records(id)) > 0 {
			if time.Now().After(deadline) {
				as := req.monitor(id)
				t.Fatalf("%d records of an annulled SSA with retention %s are still held %s after its cancellation (monitor: %+v)",
					len(req.records(id)), retention, time.Since(cancelled).Round(time.Millisecond), as.Local)
			}
			time.Sleep(pollInterval)
		}
	})
}
