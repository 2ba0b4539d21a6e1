package sink

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leodido/go-syslog/v4/rfc5424"

	"github.com/ssanet/ssanet/agent/sink/testpki"
)

// parse5424 parses msg with go-syslog's RFC 5424 parser, best effort off: any deviation
// from the RFC is an error.
func parse5424(t *testing.T, msg []byte) *rfc5424.SyslogMessage {
	t.Helper()
	m, err := rfc5424.NewParser().Parse(msg)
	if err != nil {
		t.Fatalf("go-syslog refuses %q: %v", msg, err)
	}
	return m.(*rfc5424.SyslogMessage)
}

// decodeRecord is the record a parsed message carries as its MSG.
func decodeRecord(t *testing.T, m *rfc5424.SyslogMessage) Record {
	t.Helper()
	var r Record
	if m.Message == nil || json.Unmarshal([]byte(*m.Message), &r) != nil {
		t.Fatalf("MSG is not a record as JSON: %v", m.Message)
	}
	return r
}

// TestSyslogMessageRFC5424: every message the writer builds parses with go-syslog's strict
// RFC 5424 parser, and its PRI, timestamp (cut to microseconds), structured data (escaped)
// and MSG give back what went in.
func TestSyslogMessageRFC5424(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.FixedZone("", 3600))
	eve := json.RawMessage(`{"event_type":"alert","alert":{"severity":1,"signature":"x \"]\\"}}`)
	tests := []struct {
		name     string
		cfg      SyslogConfig
		rec      Record
		wantPRI  uint8
		wantSDID string
	}{
		{"eve alert, severity from record, no SD", SyslogConfig{Facility: 13, Severity: -1},
			Record{SSAID: "s1", Seq: 7, Received: at, Format: "eve", Record: eve}, 13*8 + 2, ""},
		{"text needing escapes in SD", SyslogConfig{Facility: 4, Severity: 3, SDID: "ssanet@12345"},
			Record{SSAID: `a"b\c]d`, Seq: 1 << 40, Received: at, Format: `fo]r"mat\`, Text: "line ] \" \\ é"}, 4*8 + 3, "ssanet@12345"},
		{"syslog record keeps its severity", SyslogConfig{Facility: 1, Severity: -1, SDID: "x@1.2"},
			Record{SSAID: "s", Seq: 1, Received: at, Format: "syslog", Text: "<13>1 - - - - - - hello"}, 1*8 + 5, "x@1.2"},
		{"idmefv2 priority", SyslogConfig{Facility: 23, Severity: -1},
			Record{SSAID: "s", Seq: 2, Received: at, Format: "idmefv2", Record: json.RawMessage(`{"Priority":"Low"}`)}, 23*8 + 4, ""},
		{"no severity in record: default", SyslogConfig{Facility: 13, Severity: -1},
			Record{SSAID: "s", Seq: 3, Received: at.Truncate(time.Second), Format: "iodef", Text: "<x/>"}, 13*8 + 6, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Network, cfg.Address = NetUDP, "127.0.0.1:514"
			s, err := NewSyslog(cfg)
			if err != nil {
				t.Fatal(err)
			}
			msg, err := s.appendMessage(nil, tt.rec)
			if err != nil {
				t.Fatal(err)
			}
			m := parse5424(t, msg)
			if m.Priority == nil || *m.Priority != tt.wantPRI {
				t.Errorf("PRI %v, want %d", m.Priority, tt.wantPRI)
			}
			if want := tt.rec.Received.Truncate(time.Microsecond); m.Timestamp == nil || !m.Timestamp.Equal(want) {
				t.Errorf("timestamp %v, want %v", m.Timestamp, want)
			}
			if m.Appname == nil || *m.Appname != "ssanet" || m.MsgID == nil || *m.MsgID != "record" {
				t.Errorf("app %v msgid %v, want ssanet record", m.Appname, m.MsgID)
			}
			if tt.wantSDID == "" {
				if m.StructuredData != nil {
					t.Errorf("structured data %v, want none", *m.StructuredData)
				}
			} else {
				var sd map[string]string
				if m.StructuredData != nil {
					sd = (*m.StructuredData)[tt.wantSDID]
				}
				want := map[string]string{"ssa": tt.rec.SSAID, "seq": strconv.FormatUint(tt.rec.Seq, 10), "format": tt.rec.Format}
				if fmt.Sprint(sd) != fmt.Sprint(want) {
					t.Errorf("structured data %s = %v, want %v", tt.wantSDID, sd, want)
				}
			}
			got := decodeRecord(t, m)
			if got.SSAID != tt.rec.SSAID || got.Seq != tt.rec.Seq || got.Text != tt.rec.Text || string(got.Record) != string(tt.rec.Record) {
				t.Errorf("MSG gives %+v, want %+v", got, tt.rec)
			}
		})
	}
}

func TestSyslogConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  SyslogConfig
		ok   bool
	}{
		{"udp", SyslogConfig{Network: "udp", Address: "h:514"}, true},
		{"relp", SyslogConfig{Network: "relp", Address: "h:2514", SDID: "ssanet@32473"}, true},
		{"unknown network", SyslogConfig{Network: "sctp", Address: "h:514"}, false},
		{"no port", SyslogConfig{Network: "tcp", Address: "h"}, false},
		{"facility", SyslogConfig{Network: "tcp", Address: "h:1", Facility: 24}, false},
		{"severity", SyslogConfig{Network: "tcp", Address: "h:1", Severity: 8}, false},
		{"sd-id without number", SyslogConfig{Network: "tcp", Address: "h:1", SDID: "ssanet"}, false},
		{"sd-id with space", SyslogConfig{Network: "tcp", Address: "h:1", SDID: "ss a@1"}, false},
		{"max-message too large", SyslogConfig{Network: "udp", Address: "h:1", MaxMessage: 70000}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate: %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// records makes n small records of SSA "s", seq from+1 on.
func records(from, n int) []Record {
	out := make([]Record, n)
	for i := range out {
		out[i] = Record{SSAID: "s", Seq: uint64(from + i + 1), Received: time.Now(), Format: "eve",
			Record: json.RawMessage(fmt.Sprintf(`{"n":%d,"pad":%q}`, from+i+1, strings.Repeat("x", 100)))}
	}
	return out
}

// seqSet collects the sequence numbers a receiver got, parsing each message strictly.
type seqSet struct {
	mu   sync.Mutex
	seqs map[uint64]int
	bad  []string
}

func newSeqSet() *seqSet { return &seqSet{seqs: map[uint64]int{}} }

func (ss *seqSet) add(msg []byte) {
	m, err := rfc5424.NewParser().Parse(msg)
	var r Record
	if err == nil {
		sm := m.(*rfc5424.SyslogMessage)
		if sm.Message == nil {
			err = errors.New("no MSG")
		} else {
			err = json.Unmarshal([]byte(*sm.Message), &r)
		}
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if err != nil {
		ss.bad = append(ss.bad, fmt.Sprintf("%.200q: %v", msg, err))
		return
	}
	ss.seqs[r.Seq]++
}

func (ss *seqSet) count() (distinct, total int) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, n := range ss.seqs {
		distinct++
		total += n
	}
	return distinct, total
}

// waitFor polls cond every 10 ms until it holds or d passed.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// forward writes recs in chunks as the agent's forwarder does: a chunk that fails is written
// again, until every chunk was taken or the deadline passes.
func forward(t *testing.T, w Writer, recs []Record, chunk int, between func(done int)) {
	t.Helper()
	for i := 0; i < len(recs); i += chunk {
		c := recs[i:min(i+chunk, len(recs))]
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := w.Write(context.Background(), c)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("chunk at %d not taken: %v", i, err)
			}
			time.Sleep(20 * time.Millisecond) // the forwarder's retry interval, shortened
		}
		if between != nil {
			between(i + len(c))
		}
	}
}

// TestSyslogUDPLargeRecord: a record larger than a datagram (70 KB; it once stopped the UDP
// sink for good) is truncated to max-message and counted; the records after it go out.
func TestSyslogUDPLargeRecord(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	got := make(chan []byte, 16)
	go func() {
		buf := make([]byte, 1<<17)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				close(got)
				return
			}
			got <- append([]byte(nil), buf[:n]...)
		}
	}()
	s, err := NewSyslog(SyslogConfig{Network: NetUDP, Address: pc.LocalAddr().String(), Facility: 13, Severity: -1, MaxMessage: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	recs := records(0, 3)
	recs[1].Record = nil
	recs[1].Text = strings.Repeat("é", 35_000) // 70 KB, cut between two bytes of a rune
	if err := s.Write(context.Background(), recs); err != nil {
		t.Fatalf("Write: %v", err)
	}
	for i := range recs {
		select {
		case msg := <-got:
			if len(msg) > 4096 {
				t.Errorf("message %d: %d bytes, over max-message 4096", i, len(msg))
			}
			m := parse5424(t, msg)
			if i != 1 {
				decodeRecord(t, m)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d never arrived", i)
		}
	}
	if n := s.Truncated(); n != 1 {
		t.Errorf("Truncated() = %d, want 1", n)
	}
}

// tcpReceiver is an octet-counting syslog receiver on a fixed loopback port that can be
// stopped (its connections closed with whatever they have not read) and started again.
type tcpReceiver struct {
	t    *testing.T
	addr string
	tls  *tls.Config
	got  *seqSet
	mu   sync.Mutex
	ln   net.Listener
	conn []net.Conn
	wg   sync.WaitGroup
	// stopAfter, when > 0, stops the receiver from inside once it read that many messages.
	stopAfter int
	read      int
	stopped   chan struct{}
}

func (r *tcpReceiver) start() {
	var ln net.Listener
	var err error
	if r.tls != nil {
		ln, err = tls.Listen("tcp", r.addr, r.tls)
	} else {
		ln, err = net.Listen("tcp", r.addr)
	}
	if err != nil {
		r.t.Error(err)
		return
	}
	r.addr = ln.Addr().String()
	r.mu.Lock()
	r.ln, r.stopped = ln, make(chan struct{})
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.conn = append(r.conn, c)
			r.mu.Unlock()
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.serve(c)
			}()
		}
	}()
}

func (r *tcpReceiver) serve(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		l, err := br.ReadString(' ')
		if err != nil {
			return
		}
		n, err := strconv.Atoi(strings.TrimSpace(l))
		if err != nil || n <= 0 || n > 1<<20 {
			r.got.add([]byte("bad frame length " + l))
			return
		}
		msg := make([]byte, n)
		if _, err := io.ReadFull(br, msg); err != nil {
			return
		}
		r.got.add(msg)
		r.mu.Lock()
		r.read++
		stop := r.stopAfter > 0 && r.read == r.stopAfter
		r.mu.Unlock()
		if stop {
			go r.stop()
			return
		}
	}
}

// stop closes the listener and every connection, and waits for their goroutines.
func (r *tcpReceiver) stop() {
	r.mu.Lock()
	ln, conns := r.ln, r.conn
	r.ln, r.conn = nil, nil
	r.mu.Unlock()
	if ln == nil {
		return
	}
	ln.Close()
	for _, c := range conns {
		c.Close()
	}
	r.wg.Wait()
	close(r.stopped)
}

// TestSyslogTCPReceiverRestart: the receiver stops in the middle of the stream, with
// messages on their way, and comes back on the same port; every record arrives (some twice,
// recognisable by seq). Before, the messages written after the receiver closed went into a
// dead connection and were counted as delivered.
func TestSyslogTCPReceiverRestart(t *testing.T) {
	for _, network := range []string{NetTCP, NetTLS} {
		t.Run(network, func(t *testing.T) {
			const n, chunk = 3000, 100
			rcv := &tcpReceiver{t: t, addr: "127.0.0.1:0", got: newSeqSet(), stopAfter: 1234}
			cfg := SyslogConfig{Network: network, Facility: 13, Severity: -1}
			if network == NetTLS {
				rcv.tls, cfg.TLS = tlsPair(t)
			}
			rcv.start()
			defer rcv.stop()
			cfg.Address = rcv.addr
			s, err := NewSyslog(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			// The receiver comes back as soon as it stopped, on the same port.
			first := rcv.stopped
			restarted := make(chan struct{})
			go func() {
				<-first
				rcv.mu.Lock()
				rcv.stopAfter = 0
				rcv.mu.Unlock()
				rcv.start()
				close(restarted)
			}()
			forward(t, s, records(0, n), chunk, nil)
			select {
			case <-restarted:
			default:
				t.Fatal("the receiver never stopped: the test tests nothing")
			}
			waitFor(t, 20*time.Second, "every record at the receiver", func() bool { d, _ := rcv.got.count(); return d == n })
			d, total := rcv.got.count()
			rcv.got.mu.Lock()
			if len(rcv.got.bad) > 0 {
				t.Errorf("%d bad messages, the first: %s", len(rcv.got.bad), rcv.got.bad[0])
			}
			rcv.got.mu.Unlock()
			t.Logf("%s: %d records, %d messages (%d duplicates) across a receiver restart", network, d, total, total-d)
		})
	}
}

// tlsPair makes a CA, a server certificate for 127.0.0.1 and a client certificate, and
// returns the server's config (requiring the client's certificate) and the client's.
func tlsPair(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	pki := testpki.New(t, t.TempDir())
	srv, _, _ := pki.Leaf("server")
	cli, _, _ := pki.Leaf("client")
	server = &tls.Config{Certificates: []tls.Certificate{srv},
		ClientCAs: pki.Pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	client = &tls.Config{RootCAs: pki.Pool, Certificates: []tls.Certificate{cli},
		ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	return server, client
}

// TestSyslogTLSRefusesUnknownCA: a receiver whose certificate the configured CA did not
// sign gets nothing.
func TestSyslogTLSRefusesUnknownCA(t *testing.T) {
	srvCfg, _ := tlsPair(t)
	_, otherClient := tlsPair(t)
	rcv := &tcpReceiver{t: t, addr: "127.0.0.1:0", got: newSeqSet(), tls: srvCfg}
	rcv.start()
	defer rcv.stop()
	s, err := NewSyslog(SyslogConfig{Network: NetTLS, Address: rcv.addr, Facility: 13, Severity: -1, TLS: otherClient})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Write(context.Background(), records(0, 1)); err == nil {
		t.Fatal("Write succeeded to a receiver whose certificate no configured CA signed")
	}
}
