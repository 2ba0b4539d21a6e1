package agent

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/ssanet/ssanet/agent/sink"
	"github.com/ssanet/ssanet/agent/sink/rsyslogtest"
	"github.com/ssanet/ssanet/protocol"
)

// BenchmarkForwardToRsyslog: b.N records from the requester's store into a real rsyslog
// (Debian's rsyslog and rsyslog-relp, started by the benchmark on loopback, writing every
// message to a file). A provider shares b.N EVE records with the requester over an in-process
// agent pair; once the requester's durable store holds them all, each run is counted from the
// start of the agent's sink forwarder (its own progress file, so it starts at the first
// record) until rsyslog's file holds every record:
//
//   - relp: a syslog sink (network relp) to imrelp, every message answered by rsyslog;
//   - tcp: a syslog sink (network tcp, octet counting) to imtcp;
//   - plain: in the same run, a plain client writes the very bytes the tcp sink writes, over
//     one TCP connection to imtcp, as fast as it can: rsyslog's own intake, the ceiling.
//
// It reports records/s of each and the forwarder's share of rsyslog's intake (tcp/plain,
// relp/plain). ns/op covers the three runs together, not filling the store. README
// "Performance" has the figures.
func BenchmarkForwardToRsyslog(b *testing.B) {
	ctx := context.Background()
	relpRS, tcpRS := rsyslogtest.Start(b, "imrelp"), rsyslogtest.Start(b, "imtcp")
	prov, req, s := exchangePair(b)
	st, err := prov.Ingest(ctx, protocol.FormatEVE, bytes.NewReader(evePayload(b, b.N)))
	if err != nil {
		b.Fatal(err)
	}
	if st.Queued[s.ID] != int64(b.N) {
		b.Fatalf("provider queued %d of %d records for the SSA: %+v", st.Queued[s.ID], b.N, st)
	}
	waitFor(b, 5*time.Minute, func() (bool, string) {
		in, err := req.store.InboxState(s.ID)
		return err == nil && in.Last >= uint64(b.N), "requester's store does not hold every record"
	})

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	syslogCfg := func(name, network, addr string) SinkConfig {
		c := SinkConfig{Name: name, Type: "syslog", Network: network, Address: addr, SDID: "ssanet@64700"}
		if err := c.validate(); err != nil {
			b.Fatal(err)
		}
		return c
	}
	plainFrames := sinkBytes(b, req, s.ID, syslogCfg("capture", sink.NetTCP, "127.0.0.1:1"))
	tcpFile, relpFile := rsyslogtest.NewLineCounter(b, tcpRS.Out), rsyslogtest.NewLineCounter(b, relpRS.Out)
	const timeout = 5 * time.Minute

	b.ResetTimer()
	plain := rsyslogtest.TimeIntake(b, tcpFile, b.N, timeout, func() {
		c, err := net.Dial("tcp", tcpRS.Addr())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(plainFrames); err != nil {
			b.Fatal(err)
		}
	})
	viaForwarder := func(c SinkConfig, lc *rsyslogtest.LineCounter) time.Duration {
		var sk *sinks
		d := rsyslogtest.TimeIntake(b, lc, b.N, timeout, func() {
			var err error
			if sk, err = newSinks(req.store, b.TempDir(), []SinkConfig{c}, req.mgr.requesterRuns, log); err != nil {
				b.Fatal(err)
			}
		})
		sk.close()
		return d
	}
	tcp := viaForwarder(syslogCfg("tcp", sink.NetTCP, tcpRS.Addr()), tcpFile)
	relp := viaForwarder(syslogCfg("relp", sink.NetRELP, relpRS.Addr()), relpFile)
	b.StopTimer()

	rate := func(d time.Duration) float64 { return float64(b.N) / d.Seconds() }
	b.ReportMetric(rate(plain), "plain-rec/s")
	b.ReportMetric(rate(tcp), "store-tcp-rec/s")
	b.ReportMetric(rate(relp), "store-relp-rec/s")
	b.ReportMetric(rate(tcp)/rate(plain), "tcp/plain")
	b.ReportMetric(rate(relp)/rate(plain), "relp/plain")
}

// sinkBytes returns the bytes a syslog sink configured as c (its network tcp, its address
// replaced by a loopback listener's) writes for every record of ssaID in a's store.
func sinkBytes(b *testing.B, a *Agent, ssaID string, c SinkConfig) []byte {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer conn.Close()
		var buf bytes.Buffer
		_, _ = io.Copy(&buf, conn) // until the sink closes the connection
		got <- buf.Bytes()
	}()
	c.Address = ln.Addr().String()
	cfg, err := c.syslogConfig()
	if err != nil {
		b.Fatal(err)
	}
	w, err := sink.NewSyslog(cfg)
	if err != nil {
		b.Fatal(err)
	}
	var after uint64
	for n := 0; n < b.N; { // every chunk has at least one record: at most b.N rounds
		recs, err := a.Records(ssaID, after, forwardRecords)
		if err != nil {
			b.Fatal(err)
		}
		if len(recs) == 0 {
			b.Fatalf("the store holds %d records of %s, want %d", n, ssaID, b.N)
		}
		if err := w.Write(context.Background(), recs); err != nil {
			b.Fatal(err)
		}
		n, after = n+len(recs), recs[len(recs)-1].Seq
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	frames := <-got
	if frames == nil {
		b.Fatal("the capture listener took no connection")
	}
	return frames
}
