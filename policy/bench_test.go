package policy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/ssanet/ssanet/protocol"
)

// benchFormat is what the benchmarks of one format cycle through: sample records of
// testdata, each given a public address of its own, and filters that keep them all.
type benchFormat struct {
	files []string // samples: one record per line of each if lines, else one per file
	lines bool
	// vary returns a copy of rec in which ip, a public address, stands for one the sample
	// holds, so that the masker sees a different address in every record.
	vary func(rec []byte, ip string) []byte
	// filters are the benchmark's filters: the first reads a string field, which masking
	// may have changed, so that the requester cannot evaluate it; the second reads a
	// number, which it can.
	filters [2]benchFilter
}

type benchFilter struct{ name, expr string }

// benchFormats are the formats the benchmarks measure, in the order they report them.
var benchFormats = []string{protocol.FormatEVE, protocol.FormatIDMEF, protocol.FormatIODEF, protocol.FormatSyslog}

// benchSamples describes the benchmark records of each of benchFormats.
var benchSamples = map[string]benchFormat{
	protocol.FormatEVE: {
		files: []string{"eve/test-eve-small.jsonl", "eve/test-eve-6-0.jsonl", "eve/test-eve-metadata.jsonl"},
		lines: true,
		vary: func(rec []byte, ip string) []byte {
			return bytes.Replace(rec, []byte(`"src_ip":"192.168.86.85"`), []byte(`"src_ip":"`+ip+`"`), 1)
		},
		filters: [2]benchFilter{{"kind", `r["event.kind"] != "stats"`}, {"int-field", sourcePortFilter}},
	},
	protocol.FormatIDMEF: {
		files:   []string{"idmef/secef-gateway-test-alert.xml", "idmef/rfc4765-portscan.xml"},
		vary:    replacing("92.222.9.62", "81.2.69.192"),
		filters: [2]benchFilter{{"kind", `r["event.kind"] != "heartbeat"`}, {"int-field", sourcePortFilter}},
	},
	protocol.FormatIODEF: {
		files:   []string{"iodef/rfc7970-scan.xml"},
		vary:    replacing("175.16.199.1"),
		filters: [2]benchFilter{{"kind", `r["event.kind"] != "heartbeat"`}, {"int-field", sourcePortFilter}},
	},
	// The RFC examples name hosts by private or documentation addresses: the benchmark
	// makes them public, as a host name and inside a message.
	protocol.FormatSyslog: {
		files:   []string{"syslog/rfc5424-examples.log", "syslog/rfc3164-examples.log"},
		lines:   true,
		vary:    replacing("192.0.2.1", "10.0.0.99", "10.1.2.3"),
		filters: [2]benchFilter{{"process", `!("process.name" in r) || r["process.name"] != "cron"`}, {"int-field", `r["log.syslog.severity.code"] < 8`}},
	},
}

// sourcePortFilter keeps every record, reading a number where there is one.
const sourcePortFilter = `!("source.port" in r) || r["source.port"] > 0`

// replacing returns a benchFormat.vary that puts the address in place of every one of addrs.
func replacing(addrs ...string) func([]byte, string) []byte {
	return func(rec []byte, ip string) []byte {
		rec = bytes.Clone(rec)
		for _, a := range addrs {
			rec = bytes.ReplaceAll(rec, []byte(a), []byte(ip))
		}
		return rec
	}
}

// benchRecords is n records of format cycled from its samples, with varied public addresses.
func benchRecords(tb testing.TB, format string, n int) [][]byte {
	bf := benchSamples[format]
	var samples [][]byte
	for _, f := range bf.files {
		b := readTestdata(tb, f)
		if !bf.lines {
			samples = append(samples, b)
			continue
		}
		for _, l := range bytes.Split(b, []byte("\n")) {
			if len(bytes.TrimSpace(l)) > 0 {
				samples = append(samples, l)
			}
		}
	}
	recs := make([][]byte, n)
	for i := range recs {
		ip := fmt.Sprintf("81.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		recs[i] = bf.vary(samples[i%len(samples)], ip)
	}
	return recs
}

// benchEVE is n EVE records cycled from the samples, with varied public source addresses,
// one per line.
func benchEVE(tb testing.TB, n int) []byte {
	var b bytes.Buffer
	for _, r := range benchRecords(tb, protocol.FormatEVE, n) {
		b.Write(r)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// benchPolicy is the benchmark's SSA: 8-bit truncation of every public address anywhere,
// and a filter. Benchmarks of another format or filter change the filter's expression.
func benchPolicy() *protocol.Policy {
	return &protocol.Policy{
		Masking:   []protocol.MaskRule{{Scope: protocol.ScopePublicIP, Method: protocol.MaskTruncate, Bits: 8}},
		Filtering: []protocol.Filter{{Expr: benchSamples[protocol.FormatEVE].filters[0].expr}},
	}
}

// BenchmarkEVE measures parse + mask + filter + write of EVE records through Run.
func BenchmarkEVE(b *testing.B) {
	in := benchEVE(b, 20000)
	p := mustCompile(b, ssaFor(benchPolicy(), "eve"))
	b.SetBytes(int64(len(in)))
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		e, err := NewEnforcer(p, "eve", Config{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := e.Run(context.Background(), bytes.NewReader(in), io.Discard); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)*20000/time.Since(start).Seconds(), "records/s")
}

// BenchmarkTopNMemory measures the memory a top-N summarisation holds after 1,000,000
// distinct addresses in one window: bounded by SketchCapacity, not by the addresses.
func BenchmarkTopNMemory(b *testing.B) {
	for _, n := range []uint32{10, 1000} {
		b.Run(fmt.Sprintf("top%d", n), func(b *testing.B) {
			var held float64
			for b.Loop() {
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				s := newSummarizer(protocol.Summarization{GroupBy: "source.ip", RankBy: "source.bytes", TopN: n, Window: 3600}, "bench")
				ts := time.Unix(1700000000, 0)
				for i := range 1_000_000 {
					a := netip.AddrFrom4([4]byte{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)})
					s.add(ts, a.String(), true, int64(1+i%1500))
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				held = float64(after.HeapAlloc) - float64(before.HeapAlloc)
				runtime.KeepAlive(s)
			}
			b.ReportMetric(held, "bytes")
			b.ReportMetric(float64(SketchCapacity(int(n))), "counters")
		})
	}
}
