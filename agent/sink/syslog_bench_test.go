package sink

import (
	"bytes"
	"context"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/ssanet/ssanet/agent/sink/rsyslogtest"
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
	tcpFile, relpFile := rsyslogtest.NewLineCounter(b, tcpRS.Out), rsyslogtest.NewLineCounter(b, relpRS.Out)

	// The plain client's frames: the same messages the sink writes.
	enc, err := NewSyslog(cfg(NetTCP, tcpRS.Addr()))
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
	plain := rsyslogtest.TimeIntake(b, tcpFile, b.N, 2*time.Minute, func() {
		c, err := net.Dial("tcp", tcpRS.Addr())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		if _, err := io.Copy(c, bytes.NewReader(frames)); err != nil {
			b.Fatal(err)
		}
	})
	viaSink := func(network string, rs *rsyslog, lc *rsyslogtest.LineCounter) time.Duration {
		s, err := NewSyslog(cfg(network, rs.Addr()))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		return rsyslogtest.TimeIntake(b, lc, b.N, 2*time.Minute, func() {
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
