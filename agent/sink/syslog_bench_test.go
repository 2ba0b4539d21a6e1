package sink

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"strconv"
	"testing"
	"time"
)

// BenchmarkRsyslogIntake: b.N records into a real rsyslog (Debian's rsyslog and rsyslog-relp,
// started by the benchmark on loopback, writing every message to a file), each run counted
// from the first byte sent until rsyslog's file holds every record:
//
//   - plain: a plain client writes the syslog sink's own messages, octet-counted, over one TCP
//     connection to imtcp as fast as it can: rsyslog's own intake, the ceiling;
//   - tcp: the syslog sink (network tcp) to imtcp, in the forwarder's chunks of 512;
//   - relp: the syslog sink (network relp) to imrelp, every message answered by rsyslog.
//
// It reports records/s of each and the sink's share of rsyslog's intake (tcp/plain,
// relp/plain). ns/op covers the three runs together. README "Performance" has the figures.
func BenchmarkRsyslogIntake(b *testing.B) {
	tcpRS, relpRS := startRsyslog(b, "imtcp"), startRsyslog(b, "imrelp")
	cfg := func(network, addr string) SyslogConfig {
		return SyslogConfig{Network: network, Address: addr, Facility: 13, Severity: -1, SDID: "ssanet@64700"}
	}
	recs := records(0, b.N)
	tcpFile, relpFile := newLineCounter(b, tcpRS.out), newLineCounter(b, relpRS.out)

	// The plain client's frames: the same messages the sink writes.
	enc, err := NewSyslog(cfg(NetTCP, tcpRS.addr()))
	if err != nil {
		b.Fatal(err)
	}
	var frames []byte
	for _, r := range recs {
		msg, err := enc.appendMessage(nil, r)
		if err != nil {
			b.Fatal(err)
		}
		frames = append(strconv.AppendInt(frames, int64(len(msg)), 10), ' ')
		frames = append(frames, msg...)
	}

	b.ResetTimer()
	plain := timeIntake(b, tcpFile, func() {
		c, err := net.Dial("tcp", tcpRS.addr())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		if _, err := io.Copy(c, bytes.NewReader(frames)); err != nil {
			b.Fatal(err)
		}
	})
	viaSink := func(network string, rs *rsyslog, lc *lineCounter) time.Duration {
		s, err := NewSyslog(cfg(network, rs.addr()))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		return timeIntake(b, lc, func() {
			for i := 0; i < len(recs); i += 512 {
				if err := s.Write(context.Background(), recs[i:min(i+512, len(recs))]); err != nil {
					b.Fatalf("write chunk at %d: %v", i, err)
				}
			}
		})
	}
	tcp := viaSink(NetTCP, tcpRS, tcpFile)
	relp := viaSink(NetRELP, relpRS, relpFile)
	b.StopTimer()

	rate := func(d time.Duration) float64 { return float64(b.N) / d.Seconds() }
	b.ReportMetric(rate(plain), "plain-rec/s")
	b.ReportMetric(rate(tcp), "tcp-rec/s")
	b.ReportMetric(rate(relp), "relp-rec/s")
	b.ReportMetric(rate(tcp)/rate(plain), "tcp/plain")
	b.ReportMetric(rate(relp)/rate(plain), "relp/plain")
}

// timeIntake runs send and returns the time until lc's file holds b.N lines more than before.
func timeIntake(b *testing.B, lc *lineCounter, send func()) time.Duration {
	b.Helper()
	want := lc.count() + b.N
	start := time.Now()
	send()
	deadline := time.Now().Add(2 * time.Minute)
	for lc.count() < want {
		if time.Now().After(deadline) {
			b.Fatalf("rsyslog's file holds %d of %d lines after 2 minutes", lc.count(), want)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
}

// lineCounter counts the lines of a file that grows, reading only what was appended.
type lineCounter struct {
	b     *testing.B
	path  string
	f     *os.File
	r     *bufio.Reader
	lines int
}

func newLineCounter(b *testing.B, path string) *lineCounter {
	return &lineCounter{b: b, path: path}
}

func (lc *lineCounter) count() int {
	if lc.f == nil {
		f, err := os.Open(lc.path)
		if os.IsNotExist(err) {
			return 0
		}
		if err != nil {
			lc.b.Fatal(err)
		}
		lc.f, lc.r = f, bufio.NewReaderSize(f, 1<<20)
		lc.b.Cleanup(func() { f.Close() })
	}
	var buf [64 << 10]byte
	for {
		k, err := lc.r.Read(buf[:])
		lc.lines += bytes.Count(buf[:k], []byte{'\n'})
		if err == io.EOF || k == 0 {
			return lc.lines
		}
		if err != nil {
			lc.b.Fatal(err)
		}
	}
}
