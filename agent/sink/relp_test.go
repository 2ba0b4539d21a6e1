package sink

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/leodido/go-syslog/v4/rfc5424"
	"github.com/ssanet/ssanet/agent/sink/rsyslogtest"
)

// rsyslog is a real rsyslogd started by a test (package rsyslogtest).
type rsyslog = rsyslogtest.Rsyslog

// startRsyslog starts rsyslogd with input module input (imrelp or imtcp), or skips the test
// when it is not installed (rsyslogtest.Start).
func startRsyslog(t testing.TB, input string) *rsyslog { return rsyslogtest.Start(t, input) }

// readRsyslog parses the file rsyslog wrote: every line with go-syslog's strict RFC 5424 parser.
// It returns how often each sequence number came and the lines that did not parse.
func readRsyslog(t *testing.T, r *rsyslog) (seqs map[uint64]int, bad []string) {
	seqs = map[uint64]int{}
	f, err := os.Open(r.Out)
	if os.IsNotExist(err) {
		return seqs, nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 128<<10), 128<<10)
	p := rfc5424.NewParser()
	for sc.Scan() {
		m, err := p.Parse(sc.Bytes())
		if err != nil {
			bad = append(bad, fmt.Sprintf("%.300q: %v", sc.Text(), err))
			continue
		}
		sm := m.(*rfc5424.SyslogMessage)
		sd := map[string]string{}
		if sm.StructuredData != nil {
			sd = (*sm.StructuredData)["ssanet@64700"]
		}
		seq, err := strconv.ParseUint(sd["seq"], 10, 64)
		if err != nil || sm.Message == nil || !bytes.Contains([]byte(*sm.Message), []byte(`"seq":`+sd["seq"]+`,`)) {
			bad = append(bad, fmt.Sprintf("%.300q: no seq in structured data and MSG", sc.Text()))
			continue
		}
		seqs[seq]++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return seqs, bad
}

// TestRELPRsyslogRestarts: records go to a real rsyslog over RELP while rsyslog is stopped
// and started again twice in the middle of the stream. None is lost, repeats carry their
// sequence number, and every line rsyslog wrote parses as RFC 5424.
func TestRELPRsyslogRestarts(t *testing.T) {
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	lost, _ := rsyslogRestarts(t, startRsyslog(t, "imrelp"), SyslogConfig{Network: NetRELP}, n)
	if lost > 0 {
		t.Errorf("%d of %d records lost over RELP", lost, n)
	}
}

// TestTCPRsyslogRestarts: the same over TCP with octet counting (rsyslog's imtcp), which
// confirms nothing to the application: across rsyslog's orderly restarts (SIGTERM) the
// writer finds the connection closed and sends its last chunk again, so nothing is lost
// (before, 146 and 661 of 20,000 were). A crash can still lose what rsyslog's kernel had
// taken and rsyslog had not read (README "Delivery guarantees").
func TestTCPRsyslogRestarts(t *testing.T) {
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	if lost, _ := rsyslogRestarts(t, startRsyslog(t, "imtcp"), SyslogConfig{Network: NetTCP}, n); lost > 0 {
		t.Errorf("%d of %d records lost over TCP across rsyslog's orderly restarts", lost, n)
	}
}

// rsyslogRestarts sends n records to the real rsyslog rs through a sink configured as cfg
// (its network, and TLS where it has one), restarting rsyslog at a third and two thirds of
// the stream, and checks rsyslog's file: every line parses as RFC 5424 with a seq. It
// returns the records lost and the repeats.
func rsyslogRestarts(t *testing.T, rs *rsyslog, cfg SyslogConfig, n int) (lost, dups int) {
	network := cfg.Network
	cfg.Address, cfg.Facility, cfg.Severity, cfg.SDID = rs.Addr(), 13, -1, "ssanet@64700"
	s, err := NewSyslog(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// rsyslog is restarted while the writer goes on: frames are in flight when it goes away.
	var restarts sync.WaitGroup
	restart := func() {
		restarts.Add(1)
		go func() {
			defer restarts.Done()
			rs.Stop()
			if err := rs.Start(); err != nil {
				t.Error(err)
			}
		}()
	}
	start := time.Now()
	forward(t, s, records(0, n), 512, func(done int) {
		if done/512 == n/3/512 || done/512 == 2*n/3/512 {
			restarts.Wait() // one restart at a time
			restart()
		}
	})
	sent := time.Since(start)
	restarts.Wait()
	if rs.Started != 3 {
		t.Fatalf("rsyslog started %d times, want 3 (two restarts)", rs.Started)
	}
	if err := s.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	rs.Stop() // rsyslog writes out what it took
	seqs, bad := readRsyslog(t, rs)
	for seq := uint64(1); seq <= uint64(n); seq++ {
		switch c := seqs[seq]; {
		case c == 0:
			lost++
		case c > 1:
			dups += c - 1
		}
	}
	if len(bad) > 0 {
		t.Errorf("%d lines of rsyslog's file do not parse as RFC 5424 with a seq, the first: %s", len(bad), bad[0])
	}
	t.Logf("%d records over %s in %s (%.0f records/s) with rsyslog restarted twice: %d lost, %d duplicates",
		n, network, sent.Round(time.Millisecond), float64(n)/sent.Seconds(), lost, dups)
	return lost, dups
}
